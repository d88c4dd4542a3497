"""HTTP calls of the Locust users, timed and reported to Locust, over fresh connections.

Every call opens a new connection (`Connection: close`), so gunicorn hands it to whichever
worker accepts first: the reads reach other workers than the one that took the task, which
is what I2 and I7 need. The calls are `taskmon.harness.client.call`, the checkers' own client.

A call's outcome is one of `ok`, `unexpected` (an answer outside the statuses the caller
expects, a 5xx among them), `timeout` (no answer in time: the request may or may not have
taken effect) and `connection` (refused or cut). Only `ok` counts as a success in Locust's
statistics; every call is also written to the records for the runner's own percentiles.
"""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass
from typing import Any

from locust.env import Environment

from loadtests.recording import RECORDER
from loadtests.shapes import CALL_TIMEOUT_S
from taskmon.harness.client import Answer, call


@dataclass(frozen=True)
class Outcome:
    answer: Answer | None
    kind: str  # ok | unexpected | timeout | connection

    @property
    def ok(self) -> bool:
        return self.kind == "ok"

    @property
    def status(self) -> int | None:
        return None if self.answer is None else self.answer.status


class UnexpectedStatus(Exception):
    """Reported to Locust as the failure of a call answered outside what was expected."""


def request(
    env: Environment,
    name: str,
    base_url: str,
    method: str,
    path: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    expect: tuple[int, ...] = (200,),
    timeout: float = CALL_TIMEOUT_S,
) -> Outcome:
    """One call, reported to Locust under `name` and recorded; never raises for the network."""
    started = time.monotonic()
    answer: Answer | None = None
    error: Exception | None = None
    try:
        answer = call(base_url, method, path, body, headers=headers, timeout=timeout)
    except TimeoutError as exc:
        kind, error = "timeout", exc
    except (OSError, http.client.HTTPException) as exc:
        kind, error = "connection", exc
    else:
        kind = "ok" if answer.status in expect else "unexpected"
        if kind != "ok":
            error = UnexpectedStatus(f"{answer.status} (expected {'/'.join(map(str, expect))})")
    elapsed_ms = (time.monotonic() - started) * 1000
    env.events.request.fire(
        request_type=method,
        name=name,
        response_time=elapsed_ms,
        response_length=len(answer.body) if answer and isinstance(answer.body, bytes) else 0,
        response=answer,
        context={},
        exception=error,
        url=base_url + path,
    )
    RECORDER.write(
        "req",
        t=started,
        name=f"{method} {name}",
        ms=round(elapsed_ms, 3),
        status=None if answer is None else answer.status,
        outcome=kind,
        worker=None if answer is None else answer.worker,
    )
    return Outcome(answer, kind)


def report(env: Environment, name: str, started: float, error: Exception | None) -> None:
    """Report a call made without `request` (a stream) to Locust's statistics; the caller
    writes its own record."""
    elapsed_ms = (time.monotonic() - started) * 1000
    env.events.request.fire(
        request_type="SSE",
        name=name,
        response_time=elapsed_ms,
        response_length=0,
        response=None,
        context={},
        exception=error,
    )
