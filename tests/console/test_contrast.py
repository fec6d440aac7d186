"""WCAG AA contrast of the console's status badges, timeline bars, DAG nodes and buttons, computed from the CSS."""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings

CSS = Path(settings.BASE_DIR) / "workflows" / "static" / "workflows" / "console.css"
AA_SMALL_TEXT = 4.5


def luminance(hex_colour: str) -> float:
    value = hex_colour.lstrip("#")
    if len(value) == 3:
        value = "".join(c * 2 for c in value)
    channels = [int(value[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def palette() -> dict[str, dict[str, str]]:
    pairs: dict[str, dict[str, str]] = {}
    for name, part, colour in re.findall(r"--cc-([\w-]+?)-(bg|fg):\s*(#[0-9a-fA-F]{3,6})\s*;", CSS.read_text()):
        pairs.setdefault(name, {})[part] = colour
    return pairs


def test_the_formula_matches_known_values():
    assert round(contrast("#000", "#fff"), 1) == 21.0
    assert round(contrast("#16a34a", "#fff"), 1) == 3.3  # the old "success" green: fails AA at 11 px


def test_every_status_and_button_colour_pair_meets_aa_for_small_text():
    pairs = palette()
    assert {"pending", "running", "waiting", "success", "failed", "cancelled", "rejected", "grafana"} <= set(pairs)
    for name, pair in pairs.items():
        assert set(pair) == {"bg", "fg"}, f"--cc-{name} needs both -bg and -fg"
        ratio = contrast(pair["bg"], pair["fg"])
        assert ratio >= AA_SMALL_TEXT, f"--cc-{name}: {pair['fg']} on {pair['bg']} is {ratio:.2f}:1"


def test_text_set_in_a_palette_colour_sits_on_its_own_background():
    """A rule that writes text in --cc-X-fg also paints --cc-X-bg (or, in the SVG, the node's rect does)."""
    css = re.sub(r"/\*.*?\*/", "", CSS.read_text(), flags=re.S)
    checked = 0
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        for name in re.findall(r"(?<![\w-])color:\s*var\(--cc-([\w-]+)-fg\)", body):
            assert f"--cc-{name}-bg" in body, f"{selectors.strip()}: color --cc-{name}-fg without its background"
            checked += 1
        for name in re.findall(r"fill:\s*var\(--cc-([\w-]+)-fg\)", body):
            rect = selectors.strip().replace(" text", " rect")
            assert re.search(re.escape(rect) + r"\s*\{[^}]*fill:\s*var\(--cc-" + name + "-bg", css), selectors
            checked += 1
    assert checked >= 20
