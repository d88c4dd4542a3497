"""A client's retry path, as a Locust user: submissions under an Idempotency-Key, retried.

RetryingSubmitter joins the users only when TASKMON_LOADTEST_FRONT names a URL in front of
the service (the chaos harness's fault proxy, which may answer 5xx in the service's place or
hold its answer back); the runner adds RETRYING_USERS of them to the shape's users. Each
submission carries a fresh key; its first try goes to the front, with a read timeout shorter
than a held answer; on a 5xx, a 429 (nothing accepted), no answer in time, a refused or cut
connection or an unreadable answer, the same payload goes again under the same key to any
address (the front or an instance directly, as a load balancer spreads retries), pausing 0.1 s
and 1.5 times longer each time up to 2 s, until it is accepted or FOREVER_S runs out. Any
other answer (a 4xx) ends the key, refused. Once accepted, the key is replayed once on the
other instance directly: it must name the same task there.

What it writes (recording.py's file): `attempt` per try (key, where, status or outcome, the
fault proxy's X-Fault-Injected and X-Fault-Replaced headers when present, the task answered),
`accepted` for the task a key ended with (the run's sweep reads it back like any other),
`read` for its status reads, and `keyed` per key (tries, every task answered under it,
accepted, given up or refused). The checker compares those with the synthesis journals: a key
whose first answer was lost after the service acted must be answered with the same task on
the retry, never run a second time.
"""

from __future__ import annotations

import http.client
import os
import time
import uuid
from dataclasses import dataclass

from locust import between, task

from loadtests.calls import request
from loadtests.recording import RECORDER, now
from loadtests.shapes import CALL_TIMEOUT_S, FRONT_ENV, RETRYING_USERS
from loadtests.users import RUN_ID, TaskmonUser, _observers, sentence
from taskmon.harness.client import TERMINAL, call

# Below the fault proxy's held answers (the chaos scenario holds them 2 s), well above a
# healthy submission's answer under the chaos load (tens of ms).
# Below the fault proxy's held answers (the chaos scenario holds them 5 s), far above a
# healthy submission's answer under the chaos load (tens of ms).
FRONT_TIMEOUT_S = 2.5
DIRECT_TIMEOUT_S = CALL_TIMEOUT_S
FOREVER_S = 20.0  # a key not accepted by then is given up (and the checker says so)
FIRST_PAUSE_S = 0.1
MAX_PAUSE_S = 2.0
POLL_S = 0.3
# Worth another try under the same key: nothing was accepted (429), or nobody knows (a 5xx,
# no answer, an answer that could not be read).
RETRIED = frozenset({"timeout", "connection", "unreadable"})


class RetryNeeded(Exception):
    """Reported to Locust for a try that must be retried (an injected fault is expected)."""

    def __init__(self, outcome: str, status: int | None, injected: str | None) -> None:
        super().__init__(f"{status or outcome}" + (f" injected by {injected}" if injected else ""))


@dataclass
class Try:
    """What one try was answered."""

    status: int | None = None
    outcome: str = "answered"  # answered | timeout | connection | unreadable
    task: str | None = None
    worker: str | None = None
    base: str = ""

    @property
    def again(self) -> bool:
        """Whether the same request is to be sent again under the same key."""
        return self.task is None and (
            self.outcome in RETRIED or self.status == 429 or (self.status or 0) >= 500
        )


class RetryingSubmitter(TaskmonUser):
    """Submits under a fresh key, retries until accepted, replays the key on the other
    instance (it must name the same task), then reads the task until it ends."""

    fixed_count = RETRYING_USERS  # added to --users by the runner, not taken from them
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
        last = Try()
        pause = FIRST_PAUSE_S
        while now() - sent < FOREVER_S:
            base = self.front if attempts == 0 else self.rng.choice([self.front, *self.targets])
            attempts += 1
            last = self._try(key, payload, base)
            if last.task:
                answered.append(last.task)
            if not last.again:
                break
            time.sleep(pause)
            pause = min(MAX_PAUSE_S, pause * 1.5)
        if last.task:
            # A retry may reach any worker of any instance: the key must name this task there.
            other = self.targets[0] if last.base == self.targets[-1] else self.targets[-1]
            replay = self._try(key, payload, other, replay=True)
            answered.extend([replay.task] if replay.task else [])
        RECORDER.write(
            "keyed", t=sent, t_end=now(), key=key, attempts=attempts, tasks=sorted(set(answered)),
            accepted=last.task, refused=None if last.task or last.again else last.status,
        )  # fmt: skip
        if last.task:
            self._wait_end(last.task)

    def _try(self, key: str, payload: str, base: str, *, replay: bool = False) -> Try:
        """One try, recorded (and reported to Locust) whatever it met."""
        front = base == self.front
        started = now()
        found = Try(base=base)
        injected = replaced = None
        try:
            answer = call(
                base, "POST", "/api/tts", {"text": payload},
                headers={"Idempotency-Key": key},
                timeout=FRONT_TIMEOUT_S if front else DIRECT_TIMEOUT_S,
            )  # fmt: skip
        except TimeoutError:
            found.outcome = "timeout"
        except (OSError, http.client.HTTPException):
            found.outcome = "connection"
        except ValueError:  # a body that says JSON and is not
            found.outcome = "unreadable"
        else:
            found.status = answer.status
            injected = answer.headers.get("X-Fault-Injected")
            replaced = answer.headers.get("X-Fault-Replaced")
            found.worker = answer.headers.get("X-Worker-Id")
            body = answer.body if isinstance(answer.body, dict) else {}
            if answer.status in (200, 202) and isinstance(body.get("task_id"), str):
                found.task = body["task_id"]
        failed = found.task is None and found.status != 429
        self.environment.events.request.fire(
            request_type="POST",
            name="/api/tts (key replayed)" if replay else "/api/tts (retried with its key)",
            response_time=(now() - started) * 1000, response_length=0, response=None,
            context={}, url=base + "/api/tts",
            exception=RetryNeeded(found.outcome, found.status, injected) if failed else None,
        )  # fmt: skip
        RECORDER.write(
            "attempt", t=started, t_end=now(), key=key, front=front, replay=replay,
            status=found.status, outcome=found.outcome, injected=injected,
            replaced=None if replaced is None else int(replaced), task=found.task,
            worker=found.worker,
        )  # fmt: skip
        if found.task is not None and not replay:
            RECORDER.write(
                "accepted", t=started, t_answer=now(), task=found.task, worker=found.worker,
                status=found.status, key=key, payload=payload,
            )  # fmt: skip
        return found

    def _wait_end(self, task_id: str) -> None:
        """Status reads on the instances directly, recorded as the pollers' are, until the
        task ends (or FOREVER_S)."""
        observer = f"retry-{next(_observers)}"
        deadline = time.monotonic() + FOREVER_S
        while time.monotonic() < deadline:
            read_at = now()
            outcome = request(
                self.environment, "/api/task/status/[id]", self.target(), "GET",
                f"/api/task/status/{task_id}", expect=(200, 421),
            )  # fmt: skip
            answer = outcome.answer
            if answer is not None:
                body = answer.body if answer.status == 200 else {}
                RECORDER.write(
                    "read", t=read_at, obs=observer, task=task_id, worker=answer.worker,
                    status=answer.status, version=body.get("version"), state=body.get("state"),
                    error=(body.get("error") or {}).get("code"),
                )  # fmt: skip
                if body.get("state") in TERMINAL:
                    return
            time.sleep(POLL_S)
