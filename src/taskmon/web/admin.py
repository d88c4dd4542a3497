"""Admin endpoints, enabled by TASKMON_ADMIN_TOKEN: the global cap, the permits, the workers.

Without a token they do not exist (404). With one, a request must carry
`Authorization: Bearer <token>`, compared in constant time; anything else is 401. Every action
is logged on one line with who asked (client address, and a fingerprint of the token that can
be matched against the configured one, never the token) and what was done.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

from flask import Blueprint, Response, request

from taskmon.ports import BackendUnavailable, HolderInfo
from taskmon.runtime import Runtime
from taskmon.web.context import runtime
from taskmon.web.json_body import read_json_body
from taskmon.web.problems import problem
from taskmon.web.workers import workers_body

bp = Blueprint("admin", __name__, url_prefix="/api/admin")
log = logging.getLogger(__name__)

MAX_LIMIT = 10_000
_MAX_ID_LENGTH = 256  # a worker id or permit token longer than this names nothing


def token_fingerprint(token: str) -> str:
    """A short, stable name for a token in logs: the first 8 hex digits of its SHA-256."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:8]


def _who() -> str:
    token = runtime().settings.admin_token
    fingerprint = token_fingerprint(token.get_secret_value()) if token else "none"
    return f"by {request.remote_addr or '?'} with token {fingerprint}"


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


def _json(body: object, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json",
                    headers={"Cache-Control": "no-store"})  # fmt: skip


def _scope() -> str:
    """Memory mode, or degraded: only the worker that answered is seen or changed."""
    rt = runtime()
    return "global" if rt.monitor.backend == "redis" and not rt.degraded else "worker"


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
    log.warning("admin: concurrency limit set to %d (%s scope) %s", limit, body["scope"], _who())
    return _json(body)


def _holder_json(h: HolderInfo) -> dict[str, Any]:
    return {
        "worker": h.holder.worker,
        "task_id": h.holder.task_id,
        "token": h.token,
        "fencing": h.fencing,
        "expires_in_s": round(h.expires_in_s, 3),
    }


@bp.get("/permits")
def permits() -> Response:
    """The holders with their tokens (a token releases its permit) and the queue."""
    denied = _authorized()
    if denied is not None:
        return denied
    rt = runtime()
    holders, waiters = rt.semaphore.holders(), rt.semaphore.waiters()
    body = {
        "limit": rt.semaphore.limit(),
        "in_use": len(holders),
        "degraded": rt.degraded,
        "scope": _scope(),
        "holders": [_holder_json(h) for h in holders],
        "waiters": [
            {
                "worker": w.holder.worker,
                "task_id": w.holder.task_id,
                "token": w.token,
                "position": w.position,
                "waiting_s": None if w.waiting_s is None else round(w.waiting_s, 3),
            }
            for w in waiters
        ],
        "worker": rt.worker_id,
    }
    return _json(body)


@bp.delete("/permits/<token>")
def release_permit(token: str) -> Response:
    """Free a stuck permit by its token, whoever holds it: the next in line is granted it at
    once, and its holder's synthesis stops as on a lost lease at its next renewal."""
    denied = _authorized()
    if denied is not None:
        return denied
    rt = runtime()
    released = rt.semaphore.revoke(token) if 0 < len(token) <= _MAX_ID_LENGTH else None
    if released is None:
        return problem(404, "no permit is held under that token (released, or its lease "
                       "ended)", slug="permit-not-found")  # fmt: skip
    log.warning(
        "admin: released permit %s of task %s held by worker %s (fencing %d) %s",
        token[:8], released.holder.task_id, released.holder.worker, released.fencing, _who(),
    )  # fmt: skip
    return _json({"released": _holder_json(released), "scope": _scope(), "worker": rt.worker_id})


@bp.get("/workers")
def workers() -> Response:
    """The workers list, each entry with whether its heartbeat is current (`alive`) and how
    long ago an operator ordered it to drain (`drain_ordered_s_ago`, null when not ordered)."""
    denied = _authorized()
    if denied is not None:
        return denied
    return _json(workers_body(runtime(), detail=True))


@bp.post("/workers/<worker_id>/drain")
def drain(worker_id: str) -> Response:
    """Order a worker to drain: it admits no new task and finishes what it holds."""
    return _order_drain(worker_id, drain=True)


@bp.delete("/workers/<worker_id>/drain")
def cancel_drain(worker_id: str) -> Response:
    return _order_drain(worker_id, drain=False)


def _apply_own_drain(rt: Runtime, drain: bool) -> None:
    """The answering worker is the target: it obeys now, not at its next heartbeat. Redis
    mode: through a heartbeat, which reads the order just written, applies it and publishes
    the new state before the answer (so the workers list shows it at once); one beat at a
    time, so none publishes a state or obeys an order older than this one."""
    if rt.registry is None:
        rt.service.set_draining(drain)
        return
    try:
        rt.registry.heartbeat()
    except BackendUnavailable as exc:
        rt.service.set_draining(drain)
        if rt.failover is not None:
            rt.failover.trip(exc)
        log.warning("admin: drain state of %s not published (Redis away); it is at the "
                    "next heartbeat", rt.worker_id)  # fmt: skip


def _order_drain(worker_id: str, *, drain: bool) -> Response:
    """Through Redis: a flag the target reads at its next heartbeat (a third of the lease
    TTL at most), applied at once when the target is the worker that answered. Memory mode:
    only the answering worker is known."""
    denied = _authorized()
    if denied is not None:
        return denied
    rt = runtime()
    within_s = 0.0
    if rt.registry is None:
        found = worker_id == rt.worker_id
    elif rt.degraded:
        raise BackendUnavailable("a drain order cannot be recorded while Redis is away")
    else:
        found = 0 < len(worker_id) <= _MAX_ID_LENGTH and (
            rt.registry.order_drain(worker_id, drain) is not None
        )
        within_s = 0.0 if worker_id == rt.worker_id else round(rt.settings.lease_ttl_s / 3, 3)
    if not found:
        return problem(404, f"no live worker {worker_id}", slug="worker-not-found",
                       worker_id=worker_id)  # fmt: skip
    if worker_id == rt.worker_id:
        _apply_own_drain(rt, drain)
    what = "requested" if drain else "cancelled"
    log.warning("admin: drain of worker %s %s %s", worker_id, what, _who())
    body = {
        "order": {"worker": worker_id, "drain": drain, "applies_within_s": within_s},
        "scope": "global" if rt.registry is not None else "worker",
        "worker": rt.worker_id,
    }
    return _json(body, 202)
