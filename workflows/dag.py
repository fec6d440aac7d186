"""A workflow's steps as a picture: server-rendered SVG, one node per step, an edge per ``depends_on``.

Nodes are placed in columns by depth (the longest chain of dependencies before them) and ordered within a
column by where their dependencies sit, which keeps simple DAGs free of crossings. On a run page each node
carries its step's status as colour *and* text, links to the step's attempts on the page and, when Grafana is
configured, to the span of its latest attempt; approval gates are marked. No script and no front-end build:
the markup is produced here and styled by the console's stylesheet (``.dag-*``, the status colours).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from workflows.display import status_label

NODE_WIDTH = 176
NODE_HEIGHT = 64
COLUMN_GAP = 56
ROW_GAP = 18
PADDING = 8
MAX_LABEL = 22


@dataclass
class DagNode:
    key: str
    name: str = ""
    depends_on: list[str] = field(default_factory=list)
    gated: bool = False
    status: str = ""  # empty on a workflow's page: the definition, no run
    detail: str = ""  # the second line: attempts on a run page, the agent on a workflow's page
    href: str = ""
    span_url: str = ""


def _depths(nodes: list[DagNode]) -> dict[str, int]:
    known = {node.key: node for node in nodes}
    depth: dict[str, int] = {}

    def visit(key: str, seen: frozenset[str]) -> int:
        if key in depth:
            return depth[key]
        deps = [d for d in known[key].depends_on if d in known and d not in seen]
        depth[key] = 1 + max((visit(d, seen | {key}) for d in deps), default=-1)
        return depth[key]

    for node in nodes:
        visit(node.key, frozenset())
    return depth


def layout(nodes: list[DagNode]) -> dict[str, tuple[float, float]]:
    """Top-left corner of each node."""
    depth = _depths(nodes)
    columns: dict[int, list[DagNode]] = {}
    for node in nodes:  # definition order first
        columns.setdefault(depth[node.key], []).append(node)
    row: dict[str, float] = {}
    for column in sorted(columns):
        members = columns[column]
        if column > 0:
            # Barycentre: sit near the steps you depend on; definition order breaks ties.
            order = {node.key: index for index, node in enumerate(members)}

            def centre(node: DagNode, order: dict[str, int] = order) -> tuple[float, int]:
                placed = [row[d] for d in node.depends_on if d in row]
                return (sum(placed) / len(placed) if placed else 0.0, order[node.key])

            members.sort(key=centre)
        for index, node in enumerate(members):
            row[node.key] = index
    tallest = max((len(m) for m in columns.values()), default=1)
    placed: dict[str, tuple[float, float]] = {}
    for column, members in columns.items():
        shift = (tallest - len(members)) * (NODE_HEIGHT + ROW_GAP) / 2
        for node in members:
            x = PADDING + column * (NODE_WIDTH + COLUMN_GAP)
            y = PADDING + shift + row[node.key] * (NODE_HEIGHT + ROW_GAP)
            placed[node.key] = (x, y)
    return placed


def _short(text: str, limit: int = MAX_LABEL) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(nodes: list[DagNode], *, label: str, ident: str = "dag") -> SafeString:
    """The SVG markup; ``ident`` keeps ids (the arrow marker) unique on the page."""
    if not nodes:
        return mark_safe("")
    at = layout(nodes)
    width = max(x for x, _ in at.values()) + NODE_WIDTH + PADDING
    height = max(y for _, y in at.values()) + NODE_HEIGHT + PADDING
    edges = []
    for node in nodes:
        x2, y2 = at[node.key]
        for dep in node.depends_on:
            if dep not in at:
                continue
            x1, y1 = at[dep]
            sx, sy, ex, ey = x1 + NODE_WIDTH, y1 + NODE_HEIGHT / 2, x2 - 4, y2 + NODE_HEIGHT / 2
            bend = max((ex - sx) / 2, 12)
            edges.append(
                (
                    f"M{sx:.1f},{sy:.1f} C{sx + bend:.1f},{sy:.1f} {ex - bend:.1f},{ey:.1f} {ex:.1f},{ey:.1f}",
                    dep,
                    node.key,
                )
            )
    edge_markup = format_html_join(
        "",
        '<path class="dag-edge" d="{}" data-from="{}" data-to="{}" marker-end="url(#{}-arrow)"></path>',
        ((d, a, b, ident) for d, a, b in edges),
    )
    node_markup = mark_safe("".join(_node(node, *at[node.key]) for node in nodes))  # noqa: S308 - built by format_html
    # A minimum width keeps the labels readable on a phone; the figure scrolls inside its box instead.
    min_width = min(width, 2 * (NODE_WIDTH + COLUMN_GAP))
    return format_html(
        '<svg class="dag" id="{}" role="group" aria-label="{}" viewBox="0 0 {} {}" width="{}" height="{}" '
        'style="min-width:{}px" xmlns="http://www.w3.org/2000/svg">'
        '<defs><marker id="{}-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="dag-arrow"></path></marker></defs>'
        "{}{}</svg>",
        ident,
        label,
        f"{width:.0f}",
        f"{height:.0f}",
        f"{width:.0f}",
        f"{height:.0f}",
        f"{min_width:.0f}",
        ident,
        edge_markup,
        node_markup,
    )


def _node(node: DagNode, x: float, y: float) -> str:
    status = node.status.lower() or "definition"
    words = [f"step {node.key}"]
    if node.name and node.name != node.key:
        words.append(node.name)
    if node.status:
        words.append(status_label(node.status, step=True))
    if node.detail:
        words.append(node.detail)
    if node.gated:
        words.append("approval gate")
    lines = [status_label(node.status, step=True) if node.status else node.detail, node.detail if node.status else ""]
    gate = (
        format_html(
            '<g class="dag-gate" transform="translate({},{})"><path d="M0,-6 L6,0 L0,6 L-6,0 z"></path>'
            '<text x="-10" y="4" text-anchor="end">gate</text></g>',
            f"{x + NODE_WIDTH - 12:.1f}",
            f"{y + 15:.1f}",
        )
        if node.gated
        else ""
    )
    body = format_html(
        '<rect x="{}" y="{}" width="{}" height="{}" rx="6"></rect><text class="dag-key" x="{}" y="{}">{}</text>'
        '<text class="dag-detail" x="{}" y="{}">{}</text><text class="dag-detail" x="{}" y="{}">{}</text>{}',
        f"{x:.1f}",
        f"{y:.1f}",
        NODE_WIDTH,
        NODE_HEIGHT,
        f"{x + 10:.1f}",
        f"{y + 20:.1f}",
        _short(node.key, MAX_LABEL - 6 if node.gated else MAX_LABEL),
        f"{x + 10:.1f}",
        f"{y + 38:.1f}",
        _short(lines[0]),
        f"{x + 10:.1f}",
        f"{y + 55:.1f}",
        lines[1],
        gate,
    )
    title = ", ".join(words)
    if node.href:
        body = format_html('<a href="{}" aria-label="{}">{}</a>', node.href, title, body)
    else:
        body = format_html('<g role="img" aria-label="{}">{}</g>', title, body)
    span = (
        format_html(
            '<a class="dag-span" href="{}" target="_blank" rel="noopener" aria-label="Open the span of step {} in '
            'Grafana"><text x="{}" y="{}" text-anchor="end">span ↗</text></a>',
            node.span_url,
            node.key,
            f"{x + NODE_WIDTH - 8:.1f}",
            f"{y + 55:.1f}",
        )
        if node.span_url
        else ""
    )
    return format_html(
        '<g class="dag-node dag-{}{}" data-step="{}" data-status="{}"><title>{}</title>{}{}</g>',
        status,
        " dag-gated" if node.gated else "",
        node.key,
        node.status,
        title,
        body,
        span,
    )
