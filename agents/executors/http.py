from __future__ import annotations

from typing import Any

from agents import http
from agents.executors.base import AgentError, Executor, StepContext
from agents.http import redirect_problems

_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"}


class HttpExecutor(Executor):
    """Calls an HTTP endpoint. Config: ``url`` (or input ``url``), ``method``, ``headers``, ``retries``, and
    ``max_redirects`` (default 0: a redirect fails the attempt; up to 10 are followed, each checked like the URL).

    Inputs: ``json`` (request body), ``params`` are merged into the URL by the caller's template. Output:
    status, response headers of interest, and the body as JSON when it is JSON, else as text.
    """

    type = "http"
    secret_keys = frozenset({"headers"})

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> list[str]:
        problems = []
        method = str(config.get("method", "POST")).upper()
        if method not in _METHODS:
            problems.append(f"method: {method!r} is not one of {', '.join(sorted(_METHODS))}")
        if "url" in config and not str(config["url"]).startswith(("http://", "https://")):
            problems.append("url: must start with http:// or https://")
        if not isinstance(config.get("headers", {}), dict):
            problems.append("headers: must be a mapping of header name to value")
        return problems + redirect_problems(config)

    def execute(self, action: str, inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        url = inputs.get("url") or self.config.get("url")
        if not url:
            raise AgentError("http agent needs a url (in its config or the step's inputs)", permanent=True)
        method = str(inputs.get("method") or self.config.get("method", "POST")).upper()
        headers = {**self.config.get("headers", {}), **inputs.get("headers", {})}
        try:
            response = http.request(
                method,
                str(url),
                json=inputs.get("json"),
                headers=headers,
                retries=int(self.config.get("retries", 0)),
                deadline=ctx.deadline,
                max_redirects=int(self.config.get("max_redirects", 0)),
            )
        except http.TransportError as exc:
            raise AgentError(str(exc), permanent=exc.permanent, retry_after=exc.retry_after) from exc
        body: Any
        try:
            body = response.json()
        except ValueError:
            body = response.text[:10_000]
        return {"status": response.status_code, "body": body}
