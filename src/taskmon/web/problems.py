"""RFC 9457 problem details: every error this service answers is one of these."""

from __future__ import annotations

import json
from typing import Any

from flask import Response
from werkzeug.http import HTTP_STATUS_CODES

PROBLEM_CONTENT_TYPE = "application/problem+json"
# Our own problem types are URNs: stable names that promise no page behind them.
TYPE_PREFIX = "urn:taskmon:problem:"


def problem(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """A problem+json response. Without `slug` the type is about:blank (plain HTTP semantics)."""
    body: dict[str, Any] = {
        "type": f"{TYPE_PREFIX}{slug}" if slug else "about:blank",
        "title": title or HTTP_STATUS_CODES.get(status, "Error"),
        "status": status,
        "detail": detail,
        **extra,
    }
    response = Response(
        json.dumps(body, ensure_ascii=False), status=status, content_type=PROBLEM_CONTENT_TYPE
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response
