"""What one worker publishes of itself for the others to show: the workers list.

A worker publishes it in its registry heartbeat (Redis mode), so the list every worker answers
is what Redis holds, each entry as of that worker's last heartbeat (at most a third of the
lease TTL old while it lives). A degraded worker cannot publish: its entry ages (`last_seen_s`
grows) until the record is dropped, and only the worker itself can tell its live state.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class WorkerState:
    """One worker's state: `in_flight` syntheses running under a permit, `pending` tasks
    accepted and not yet synthesizing (queued, or waiting for a permit), `draining` when it
    admits no new task (an operator's order). `last_seen_s`: seconds since it published this.
    """

    worker: str
    backend: str
    degraded: bool
    in_flight: int
    pending: int
    draining: bool
    last_seen_s: float = 0.0

    def encode(self) -> str:
        """The record a heartbeat publishes (the worker id and time are stored beside it)."""
        body = asdict(self)
        del body["worker"], body["last_seen_s"]
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def decode(cls, worker: str, record: str, last_seen_s: float) -> WorkerState | None:
        """The state in a published record; None when it is not one (damaged, or written by
        a version that published other fields)."""
        try:
            body: Any = json.loads(record)
            return cls(
                worker,
                str(body["backend"]),
                bool(body["degraded"]),
                int(body["in_flight"]),
                int(body["pending"]),
                bool(body["draining"]),
                round(max(0.0, last_seen_s), 3),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def seen_now(self) -> WorkerState:
        return replace(self, last_seen_s=0.0)

    def to_json(self) -> dict[str, Any]:
        """The public fields of GET /api/monitor/workers, in their documented order."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class PublishedWorker:
    """A worker's record in Redis, with what the registry adds: whether its heartbeat deadline
    has passed, and when an operator ordered it to drain (seconds ago), if one did."""

    state: WorkerState
    alive: bool
    drain_ordered_s_ago: float | None
