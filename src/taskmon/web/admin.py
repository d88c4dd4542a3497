"""Admin endpoints, enabled by TASKMON_ADMIN_TOKEN: change the global cap live.

Without a token they do not exist (404). With one, a request must carry
`Authorization: Bearer <token>`, compared in constant time; anything else is 401.
"""

from __future__ import annotations

import hmac
import json

from flask import Blueprint, Response, request

from taskmon.web.context import runtime
from taskmon.web.json_body import read_json_body
from taskmon.web.problems import problem

bp = Blueprint("admin", __name__, url_prefix="/api/admin")

MAX_LIMIT = 10_000


def _authorized() -> Response | None:
    """None when the request may proceed, else the problem to answer."""
    token = runtime().settings.admin_token
    if token is None:
        return problem(404, "admin endpoints are disabled (TASKMON_ADMIN_TOKEN is not set)")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.get_secret_value().encode()
    ):
        return problem(
            401,
            "a valid `Authorization: Bearer <TASKMON_ADMIN_TOKEN>` header is required",
            slug="unauthorized",
            headers={"WWW-Authenticate": 'Bearer realm="taskmon-admin"'},
        )
    return None


@bp.put("/concurrency")
def set_concurrency() -> Response:
    """Body {"limit": n}. Redis: every worker of every host obeys it at its next grant."""
    denied = _authorized()
    if denied is not None:
        return denied
    payload, refused = read_json_body()
    if refused is not None and refused.status_code == 415:
        return refused
    # A body that does not parse is answered like one without a valid limit.
    limit = payload.get("limit") if isinstance(payload, dict) else None
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        return problem(
            400, f"limit must be an integer from 1 to {MAX_LIMIT}", slug="invalid-input",
            field="limit",
        )  # fmt: skip
    rt = runtime()
    rt.semaphore.set_limit(limit)
    body = {
        "limit": rt.semaphore.limit(),
        # Memory mode has no shared cap: only the worker that answered changed.
        "scope": "global" if rt.monitor.backend == "redis" else "worker",
        "worker": rt.worker_id,
    }
    return Response(json.dumps(body), mimetype="application/json")
