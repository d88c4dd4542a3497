"""A client's retry path, as a Locust user: submissions under an Idempotency-Key, retried.

RetryingSubmitter joins the users only when TASKMON_LOADTEST_FRONT names a URL in front of
the service (the chaos harness's fault proxy, which may answer 5xx in the service's place or
hold its answer back). Each submission carries a fresh key; its first attempt goes to the
front, with a read timeout shorter than a held answer; on a 5xx, a timeout or a refused
connection, it is sent again with the same key and the same payload to any address (the front
or an instance directly, as a load balancer spreads retries), with a growing pause, until it
is accepted or FOREVER_S runs out. A 429 is retried the same way: nothing was accepted.

What it writes (recording.py's file): `attempt` per try (key, where, status or outcome, the
fault proxy's X-Fault-Injected header when present, the task id answered), `accepted` for the
task a key ended with (so the run's sweep reads it back like any other), and `keyed` per key
(attempts, every task id answered under it, accepted or given up). The checker compares those
with the synthesis journals: a key whose first answer was lost after the service acted must
be answered with the same task on the retry, never run a second time.
"""

from __future__ import annotations

import http.client
import os
import time
import uuid
from typing import Any

from locust import between, task

from loadtests.calls import request
from loadtests.recording import RECORDER, now
from loadtests.shapes import FRONT_ENV
from loadtests.users import RUN_ID, TaskmonUser, sentence
from taskmon.harness.client import TERMINAL, call

# Below the fault proxy's held answers (the chaos scenario holds them 2 s), well above a
# healthy submission's answer under the chaos load (tens of ms).
FRONT_TIMEOUT_S = 1.0
DIRECT_TIMEOUT_S = 10.0
FOREVER_S = 30.0  # a key not accepted by then is given up (and the checker says so)
FIRST_PAUSE_S = 0.1
MAX_PAUSE_S = 2.0
POLL_S = 0.3


class RetryNeeded(Exception):
    """Reported to Locust for a try that must be retried (an injected fault is expected)."""

    def __init__(self, outcome: str, status: int | None, injected: str | None) -> None:
        super().__init__(f"{status or outcome}" + (f" injected by {injected}" if injected else ""))


class RetryingSubmitter(TaskmonUser):
    """Submits under a fresh key, retries until accepted, then waits for the task's end."""

    fixed_count = 4  # whatever --users says: enough keys to judge, the same in every run
    wait_time = between(0.1, 0.5)

    def on_start(self) -> None:
        super().on_start()
        self.front = os.environ[FRONT_ENV].rstrip("/")

    @task
    def submit_with_retries(self) -> None:
        key = f"retry-{RUN_ID}-{uuid.uuid4().hex[:12]}"
        payload = f"{sentence(self.rng)} ({key})"
        sent = now()
        answered: list[str] = []
        attempts = 0
        accepted: dict[str, Any] | None = None
        pause = FIRST_PAUSE_S
        while accepted is None and now() - sent < FOREVER_S:
            base = self.front if attempts == 0 else self.rng.choice([self.front, *self.targets])
            attempts += 1
            accepted = self._attempt(key, payload, base, answered)
            if accepted is None:
                time.sleep(pause)
                pause = min(MAX_PAUSE_S, pause * 1.5)
        RECORDER.write(
            "keyed", t=sent, t_end=now(), key=key, attempts=attempts, tasks=sorted(set(answered)),
            accepted=None if accepted is None else accepted["task_id"],
        )  # fmt: skip
        if accepted is not None:
            self._wait_end(accepted["task_id"])

    def _attempt(
        self, key: str, payload: str, base: str, answered: list[str]
    ) -> dict[str, Any] | None:
        """One try; the accepted body, or None (and the try is recorded either way)."""
        front = base == self.front
        started = now()
        status: int | None = None
        injected = task_id = worker = None
        try:
            answer = call(
                base, "POST", "/api/tts", {"text": payload},
                headers={"Idempotency-Key": key},
                timeout=FRONT_TIMEOUT_S if front else DIRECT_TIMEOUT_S,
            )  # fmt: skip
        except TimeoutError:
            outcome = "timeout"
        except (OSError, http.client.HTTPException):
            outcome = "connection"
        else:
            status, outcome = answer.status, "answered"
            injected = answer.headers.get("X-Fault-Injected")
            worker = answer.headers.get("X-Worker-Id")
            body = answer.body if isinstance(answer.body, dict) else {}
            if status in (200, 202) and isinstance(body.get("task_id"), str):
                task_id = body["task_id"]
                answered.append(task_id)
        self.environment.events.request.fire(
            request_type="POST", name="/api/tts (retried with its key)",
            response_time=(now() - started) * 1000, response_length=0, response=None,
            context={}, url=base + "/api/tts",
            exception=None if task_id or status == 429 else RetryNeeded(outcome, status, injected),
        )  # fmt: skip
        RECORDER.write(
            "attempt", t=started, t_end=now(), key=key, front=front, status=status,
            outcome=outcome, injected=injected, task=task_id, worker=worker,
        )  # fmt: skip
        if task_id is None:
            return None
        RECORDER.write(
            "accepted", t=started, t_answer=now(), task=task_id, worker=worker, status=status,
            key=key, payload=payload,
        )  # fmt: skip
        return {"task_id": task_id}

    def _wait_end(self, task_id: str) -> None:
        """Status reads on the instances directly, until the task ends (or its deadline)."""
        deadline = time.monotonic() + FOREVER_S
        while time.monotonic() < deadline:
            outcome = request(
                self.environment, "/api/task/status/[id]", self.target(), "GET",
                f"/api/task/status/{task_id}", expect=(200, 421),
            )  # fmt: skip
            answer = outcome.answer
            if answer is not None and answer.status == 200 and answer.body["state"] in TERMINAL:
                return
            time.sleep(POLL_S)
