"""GET /openapi.json: the OpenAPI 3.1 description of every route this app serves.

The document is a file of the package (web/openapi.json), read once per process; only its
`info.version` is filled in here, from the package metadata, so it never names another release.
tests/unit/test_openapi.py holds it to the code (the routes, the JSON the views build) and
tests/e2e/test_fuzz.py fuzzes a live stack from it. A missing or broken file fails the first
request to the route with a 500 (logged), not the worker's start: the API does not depend on it.
"""

from __future__ import annotations

import functools
import json
from importlib.resources import files
from typing import Any

from flask import Blueprint, Response

import taskmon

bp = Blueprint("openapi", __name__)

DOCUMENT_FILE = "openapi.json"


def document() -> dict[str, Any]:
    """The document as a fresh dict (callers may change it), version filled in."""
    doc: dict[str, Any] = json.loads(_serialized())
    return doc


@functools.cache
def _serialized() -> str:
    doc = json.loads(files("taskmon.web").joinpath(DOCUMENT_FILE).read_text(encoding="utf-8"))
    doc["info"]["version"] = taskmon.__version__
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


@bp.get("/openapi.json")
def openapi_document() -> Response:
    return Response(_serialized(), mimetype="application/json")
