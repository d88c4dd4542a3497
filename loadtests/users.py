"""The Locust users, each small and named for the invariant it feeds.

- SubmitAndPoll: submits, then reads the status over fresh connections until it ends (I2, I3,
  I5), and fetches the audio once done.
- SubmitAndStream: submits, then reads the SSE stream to its end on whichever worker answers
  (I3, I7); one stream in four leaves after its first event and comes back with
  Last-Event-ID (no version seen twice, the end still delivered).
- IdempotencyStorm: all storm users POST one payload under one key per round (I4); a user whose
  POST was accepted then sends another payload under the same key and expects 422.
- MonitorReader: the stats, the permits and the monitor page, as dashboards poll them.

The targets are TASKMON_LOADTEST_TARGETS (comma-separated base URLs, one per instance), or
Locust's --host. Every user picks a target per call, so a task is read on other instances too.
"""

from __future__ import annotations

import http.client
import itertools
import os
import random
import time
import uuid
from typing import Any, ClassVar

from locust import User, between, task

from loadtests.calls import UnexpectedStatus, report, request
from loadtests.recording import RECORDER, now
from loadtests.shapes import TASK_DEADLINE_S
from taskmon.harness.client import TERMINAL
from taskmon.harness.sse_client import SSEMessage, SSEStream, read_stream

POLL_INTERVAL_S = 0.2
STORM_ROUND_S = 3.0
RUN_ID = os.environ.get("TASKMON_LOADTEST_RUN_ID") or uuid.uuid4().hex[:8]
WORDS = "the quick brown fox jumps over a lazy dog while seven wizards box".split()  # noqa: SIM905

_observers = itertools.count()


def targets(host: str | None) -> list[str]:
    listed = os.environ.get("TASKMON_LOADTEST_TARGETS", "")
    found = [url.strip().rstrip("/") for url in listed.split(",") if url.strip()]
    if not found and host:
        found = [host.rstrip("/")]
    if not found:
        raise RuntimeError("no target: set TASKMON_LOADTEST_TARGETS or pass --host")
    return found


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))


class TaskmonUser(User):
    """A user of the API over fresh connections, spread over every target."""

    abstract = True
    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        self.targets = targets(self.host)
        self.rng = random.Random()  # noqa: S311 (load, not secrets)

    def target(self) -> str:
        return self.rng.choice(self.targets)

    def submit(self, text: str, key: str | None = None) -> dict[str, Any] | None:
        """POST /api/tts; the accepted body, or None (refused, or no answer: recorded)."""
        headers = {"Idempotency-Key": key} if key else None
        sent = now()
        outcome = request(
            self.environment,
            "/api/tts",
            self.target(),
            "POST",
            "/api/tts",
            body={"text": text},
            headers=headers,
            expect=(200, 202, 429),
        )
        if outcome.kind in ("timeout", "connection"):
            # It may have been accepted: counted as "may have happened", never as failed.
            RECORDER.write("unsure", t=sent, key=key, outcome=outcome.kind)
            return None
        answer = outcome.answer
        if answer is None or answer.status not in (200, 202):
            return None
        body: dict[str, Any] = answer.body
        RECORDER.write(
            "accepted",
            t=sent,
            t_answer=now(),
            task=body["task_id"],
            worker=answer.worker,
            status=answer.status,
            key=key,
            payload=text if key else None,
        )
        return body


class SubmitAndPoll(TaskmonUser):
    weight = 4

    @task
    def submit_and_poll(self) -> None:
        accepted = self.submit(sentence(self.rng))
        if accepted is None:
            return
        task_id = accepted["task_id"]
        observer = f"poll-{next(_observers)}"
        deadline = time.monotonic() + TASK_DEADLINE_S
        while time.monotonic() < deadline:
            read_at = now()
            outcome = request(
                self.environment,
                "/api/task/status/[id]",
                self.target(),
                "GET",
                f"/api/task/status/{task_id}",
                # 421: a degraded worker does not know another worker's task (asked again).
                expect=(200, 421),
            )
            answer = outcome.answer
            if answer is None:
                time.sleep(POLL_INTERVAL_S)
                continue
            body = answer.body if answer.status == 200 else {}
            RECORDER.write(
                "read",
                t=read_at,
                obs=observer,
                task=task_id,
                worker=answer.worker,
                status=answer.status,
                version=body.get("version"),
                state=body.get("state"),
                error=(body.get("error") or {}).get("code"),
            )
            if body.get("state") in TERMINAL:
                if body["state"] == "done":
                    request(
                        self.environment,
                        "/api/task/result/[id]",
                        self.target(),
                        "GET",
                        f"/api/task/result/{task_id}",
                        # 404: the audio is on the disk of the host that made it; 421: a
                        # degraded worker does not know another worker's task.
                        expect=(200, 404, 421) if len(self.targets) > 1 else (200, 421),
                    )
                return
            time.sleep(POLL_INTERVAL_S)


class SubmitAndStream(TaskmonUser):
    weight = 3

    @task
    def submit_and_stream(self) -> None:
        accepted = self.submit(sentence(self.rng))
        if accepted is None:
            return
        task_id = accepted["task_id"]
        observer = f"stream-{next(_observers)}"
        resume = self.rng.random() < 0.25
        first = self.stream(task_id, observer, until_first=resume)
        if resume and first is not None and first.id is not None:
            self.stream(task_id, observer, last_event_id=first.id)

    def stream(
        self,
        task_id: str,
        observer: str,
        *,
        until_first: bool = False,
        last_event_id: str | None = None,
    ) -> SSEMessage | None:
        """Read one stream and record it, whatever ends it; its last message, or None."""
        base = self.target()
        opened = now()
        error: Exception | None = None
        headers = {"Last-Event-ID": last_event_id} if last_event_id else None
        received: list[SSEMessage] = []  # kept as they arrive: a stream cut midway still counts
        stream: SSEStream | None = None
        outcome = "stopped"  # unless it ends otherwise: Locust stopped this user meanwhile

        def keep(message: SSEMessage) -> bool:
            received.append(message)
            return until_first

        try:
            stream = read_stream(
                base,
                f"/api/task/stream/{task_id}",
                headers=headers,
                timeout=TASK_DEADLINE_S,
                until=keep,
            )
            # 204: the stream was resumed past the terminal event; nothing more will come.
            outcome = "ok" if stream.status in (200, 204) else "unexpected"
            if outcome != "ok":
                error = UnexpectedStatus(f"{stream.status} (expected 200 or 204)")
            elif not stream.ended and not until_first:
                outcome, error = "timeout", TimeoutError(f"no end within {TASK_DEADLINE_S} s")
        except TimeoutError as exc:
            outcome, error = "timeout", exc
        except (OSError, http.client.HTTPException) as exc:
            outcome, error = "connection", exc
        finally:
            if outcome != "stopped":
                report(self.environment, "/api/task/stream/[id]", opened, error)
            RECORDER.write(
                "stream",
                t=opened,
                t_end=now(),
                obs=observer,
                task=task_id,
                worker=None if stream is None else stream.headers.get("X-Worker-Id"),
                status=None if stream is None else stream.status,
                outcome=outcome,
                events=_state_events(received),
                ended=bool(stream and stream.ended),
                left_early=until_first,
                resumed_from=last_event_id,
            )
        return received[-1] if received else None


def _state_events(messages: list[SSEMessage]) -> list[list[Any]]:
    """[version, state, arrival, worker, finished_at, error code] of each state event (a bad
    one as such)."""
    events: list[list[Any]] = []
    for message in messages:
        if message.event != "state":
            continue
        try:
            data = message.json()
            events.append(
                [
                    data["version"],
                    data["state"],
                    message.received_at,
                    data.get("worker"),
                    data.get("finished_at"),
                    (data.get("error") or {}).get("code"),
                ]
            )
        except (ValueError, KeyError, TypeError):
            events.append([None, "unreadable", message.received_at, None, None, None])
    return events


class IdempotencyStorm(TaskmonUser):
    """Every storm user sends one payload under one key per round of STORM_ROUND_S seconds."""

    weight = 2
    wait_time = between(0.05, 0.3)
    started: ClassVar[float] = time.monotonic()

    @task
    def storm(self) -> None:
        round_no = int((time.monotonic() - self.started) / STORM_ROUND_S)
        key = f"storm-{RUN_ID}-{round_no}"
        payload = f"storm round {round_no} of run {RUN_ID}"
        sent = now()
        accepted = self.submit(payload, key)
        RECORDER.write(
            "idem",
            t=sent,
            key=key,
            same=True,
            task=accepted["task_id"] if accepted else None,
        )
        if accepted is not None and self.rng.random() < 0.2:
            # The key is taken now: another payload under it must be refused, never run.
            sent = now()
            outcome = request(
                self.environment,
                "/api/tts (conflicting key)",
                self.target(),
                "POST",
                "/api/tts",
                body={"text": payload + " (another payload)"},
                headers={"Idempotency-Key": key},
                expect=(422,),
            )
            body = outcome.answer.body if outcome.answer is not None else None
            RECORDER.write(
                "idem",
                t=sent,
                key=key,
                same=False,
                status=outcome.status,
                outcome=outcome.kind,
                task=body.get("task_id") if isinstance(body, dict) else None,
                worker=None if outcome.answer is None else outcome.answer.worker,
            )


class MonitorReader(TaskmonUser):
    weight = 1
    wait_time = between(0.5, 1.5)

    @task(3)
    def stats(self) -> None:
        request(self.environment, "/api/monitor/stats", self.target(), "GET", "/api/monitor/stats")

    @task(1)
    def permits(self) -> None:
        request(
            self.environment, "/api/monitor/permits", self.target(), "GET", "/api/monitor/permits"
        )

    @task(2)
    def recent(self) -> None:
        # What the monitor page reads every 2 s (and at once when the counts move).
        path = "/api/monitor/recent?limit=50"
        request(self.environment, "/api/monitor/recent", self.target(), "GET", path)

    @task(1)
    def page(self) -> None:
        request(self.environment, "/monitor", self.target(), "GET", "/monitor")
