"""GET /api/monitor/workers: every worker's state, as the workers list shows it.

Redis mode: what Redis holds, each worker's record as of its last heartbeat (a worker not
heard from keeps its record, its `last_seen_s` growing, until the record is dropped), with the
answering worker's own entry replaced by its live state. A degraded worker cannot read Redis:
it answers its own live state only, and says so (`degraded: true`, `scope: "worker"`). Memory
mode: the answering worker only (`scope: "worker"`).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response

from taskmon.ports import BackendUnavailable
from taskmon.runtime import Runtime
from taskmon.web.context import runtime
from taskmon.worker_state import PublishedWorker

bp = Blueprint("workers", __name__, url_prefix="/api/monitor")


def published_workers(rt: Runtime) -> tuple[list[PublishedWorker], bool]:
    """The workers list and whether it is global (read from Redis) or this worker alone.

    The answering worker is always in it with its live state. A degraded worker does not try
    Redis (it has just failed to reach it; a read would cost a call budget per request)."""
    me = PublishedWorker(rt.worker_state(), alive=True, drain_ordered_s_ago=None)
    if rt.registry is None or rt.degraded:
        return [me], False
    try:
        listed = rt.registry.published()
    except BackendUnavailable as exc:
        if rt.failover is not None:
            rt.failover.trip(exc)
        return [PublishedWorker(rt.worker_state(), True, None)], False
    mine = next((p for p in listed if p.state.worker == rt.worker_id), None)
    if mine is not None:
        me = PublishedWorker(me.state, True, mine.drain_ordered_s_ago)
    others = [p for p in listed if p.state.worker != rt.worker_id]
    return sorted([*others, me], key=lambda p: p.state.worker), True


def workers_body(rt: Runtime, *, detail: bool = False) -> dict[str, Any]:
    """The body of GET /api/monitor/workers; `detail` adds the admin fields to each entry."""
    listed, whole = published_workers(rt)
    entries = []
    for p in listed:
        entry = p.state.to_json()
        if detail:
            entry["alive"] = p.alive
            entry["drain_ordered_s_ago"] = (
                None if p.drain_ordered_s_ago is None else round(p.drain_ordered_s_ago, 3)
            )
        entries.append(entry)
    return {
        "workers": entries,
        "worker": rt.worker_id,
        "degraded": rt.degraded,
        "scope": "global" if whole else "worker",
    }


@bp.get("/workers")
def workers() -> Response:
    body = workers_body(runtime())
    return Response(json.dumps(body), mimetype="application/json",
                    headers={"Cache-Control": "no-store"})  # fmt: skip
