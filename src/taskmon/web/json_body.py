"""The JSON body of a request, read only when the client says it sent JSON.

A body is read as JSON when its Content-Type is `application/json` or a structured-syntax
`application/<name>+json` (RFC 6839), with any parameters (`; charset=utf-8`). Anything else,
a missing Content-Type included, is 415 `unsupported-media-type` before the body is read: a
form or a text/plain body that happens to parse as JSON is not a request to act on (a
cross-site form can send text/plain without a preflight).
"""

from __future__ import annotations

from typing import Any

from flask import Response, request
from werkzeug.exceptions import BadRequest

from taskmon.web.problems import problem

JSON_MEDIA_TYPE = "application/json"
# How much of a refused Content-Type the answer quotes back.
_SHOWN_CHARS = 100


def read_json_body() -> tuple[Any, Response | None]:
    """(payload, None) for a JSON body, or (None, the problem to answer): 415 for a body that
    is not declared JSON, 400 `invalid-json` for one that does not parse. A body over
    MAX_CONTENT_LENGTH raises RequestEntityTooLarge (413) as before."""
    if not request.is_json:
        return None, unsupported_media_type()
    try:
        return request.get_json(silent=False), None
    except BadRequest:
        return None, problem(400, "the body is not valid JSON", slug="invalid-json")


def unsupported_media_type() -> Response:
    sent = request.headers.get("Content-Type", "").strip()[:_SHOWN_CHARS]
    what = f"Content-Type {sent!r}" if sent else "no Content-Type"
    headers = {"Accept-Post": JSON_MEDIA_TYPE} if request.method == "POST" else None
    return problem(
        415,
        f"the body must be JSON sent as `Content-Type: {JSON_MEDIA_TYPE}`; this request has {what}",
        slug="unsupported-media-type",
        headers=headers,
        accepted=[JSON_MEDIA_TYPE, "application/*+json"],
    )
