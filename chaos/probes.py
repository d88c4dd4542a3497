"""What the run watches besides the load: every worker's own account of its mode, and the
steady-state hypothesis checked before, during and after the fault.

`Watcher` reads /api/monitor/stats of every instance every 0.1 s over fresh connections (any
worker may answer) and keeps each answer: which worker, degraded or not, its share, or how the
call failed. `steady_state(step, ...)` runs the hypothesis's probes for one step and returns
each probe's outcome, so the report names the step and the probe that failed (as Chaos
Toolkit's steady-state hypothesis and Litmus' probes do).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from taskmon.harness.client import TERMINAL, call

WATCH_EVERY_S = 0.1
# As long as the users wait: a worker frozen for 5 s answers late, not never.
PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Look:
    t: float
    instance: int
    status: int  # 0: no answer (connection failed or timed out)
    worker: str = ""
    pid: int | None = None
    degraded: bool | None = None
    limit: int | None = None
    error: str = ""
    t_end: float = 0.0


class Watcher(threading.Thread):
    def __init__(self, bases: list[str]) -> None:
        super().__init__(name="chaos-watcher", daemon=True)
        self.bases = bases
        self.looks: list[Look] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(WATCH_EVERY_S):
            for index, base in enumerate(self.bases):
                self.looks.append(look(index, base))

    def stop(self) -> None:
        self.stopping.set()
        self.join(PROBE_TIMEOUT_S + 1)

    def workers(self, instance: int | None = None) -> set[str]:
        return {
            x.worker for x in self.looks
            if x.status == 200 and (instance is None or x.instance == instance)
        }  # fmt: skip

    def mode_by_worker(self, since: float) -> dict[str, bool]:
        """Each worker's latest `degraded` flag heard since `since`."""
        latest: dict[str, bool] = {}
        for x in self.looks:
            if x.t >= since and x.status == 200 and x.degraded is not None:
                latest[x.worker] = x.degraded
        return latest


def look(index: int, base: str) -> Look:
    t = time.monotonic()
    try:
        answer = call(base, "GET", "/api/monitor/stats", timeout=PROBE_TIMEOUT_S)
    except Exception as exc:  # no answer a client could read: that is what is recorded
        return Look(t, index, 0, error=repr(exc), t_end=time.monotonic())
    body = answer.body if isinstance(answer.body, dict) else {}
    pid = None
    if answer.worker and ":" in answer.worker:
        try:
            pid = int(answer.worker.rsplit(":", 1)[1])
        except ValueError:
            pid = None
    concurrency = body.get("concurrency") or {}
    return Look(
        t,
        index,
        answer.status,
        worker=answer.worker,
        pid=pid,
        degraded=body.get("degraded"),
        limit=concurrency.get("limit"),
        error="" if answer.status == 200 else str(body)[:200],
        t_end=time.monotonic(),
    )


@dataclass
class Probe:
    name: str
    ok: bool
    detail: str
    tasks: list[str] = field(default_factory=list)  # the tasks its submissions were given


@dataclass
class Step:
    """One step of the steady-state hypothesis: before, during or after the fault."""

    name: str
    t: float
    probes: list[Probe] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(probe.ok for probe in self.probes)

    def failed(self) -> list[Probe]:
        return [probe for probe in self.probes if not probe.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "t": self.t,
            "ok": self.ok,
            "probes": [asdict(p) for p in self.probes],
        }


def steady_state(
    step: str,
    bases: list[str],
    *,
    cut: set[int],
    policy: str,
    workers_per_instance: int,
    redis_fault: bool,
) -> Step:
    """The hypothesis for `step`:

    - before and after: every instance answers its stats; every worker heard says it is
      not degraded; a task submitted now ends `done` and every instance reads it;
    - during: every instance answers (no 5xx, no dropped call); with Redis cut, the cut
      instances' workers say `degraded` and the others do not, and a submission answers 202
      (partition) or 429 `degraded-rejecting` (reject), never a 5xx.
    """
    result = Step(step, time.monotonic())
    looks = [look(index, base) for index, base in enumerate(bases) for _ in range(12)]
    for index in range(len(bases)):
        mine = [x for x in looks if x.instance == index]
        bad = [x for x in mine if x.status != 200]
        result.probes.append(
            Probe(
                f"instance {index + 1} answers its stats",
                not bad,
                f"{len(mine) - len(bad)}/{len(mine)} answered 200"
                + (f"; first failure: {bad[0].status} {bad[0].error}" if bad else ""),
            )
        )
        heard = {x.worker: x.degraded for x in mine if x.status == 200}
        expect_degraded = step == "during" and redis_fault and index in cut
        wrong = sorted(w for w, degraded in heard.items() if bool(degraded) != expect_degraded)
        result.probes.append(
            Probe(
                f"instance {index + 1}'s workers say degraded: {str(expect_degraded).lower()}",
                bool(heard) and not wrong,
                f"{len(heard)} of {workers_per_instance} workers heard"
                + (f"; saying otherwise: {', '.join(wrong)}" if wrong else ""),
            )
        )
    if step == "during":
        result.probes.append(_submit_during(bases, cut, policy, redis_fault))
    else:
        result.probes.append(_task_round_trip(bases))
    return result


def _submit_during(bases: list[str], cut: set[int], policy: str, redis_fault: bool) -> Probe:
    answers: list[str] = []
    tasks: list[str] = []
    for index, base in enumerate(bases):
        try:
            answer = call(base, "POST", "/api/tts", {"text": "steady state probe"}, timeout=10)
        except Exception as exc:
            return Probe("a submission is answered", False, f"instance {index + 1}: {exc!r}", tasks)
        if answer.status == 202:
            tasks.append(answer.body["task_id"])
        slug = str((answer.body or {}).get("type", "")).rsplit(":", 1)[-1]
        answers.append(f"{answer.status} {slug}".strip())
        allowed = {202, 429}
        if policy == "reject" and redis_fault and index in cut:
            allowed = {429}
        if answer.status not in allowed:
            return Probe(
                "a submission is answered as the policy says",
                False,
                f"instance {index + 1} answered {answer.status}: {str(answer.body)[:200]}",
                tasks,
            )
        if answer.status == 429 and slug not in {"queue-full", "degraded-rejecting"}:
            return Probe("a refusal says why", False, f"429 {slug}", tasks)
    return Probe("a submission is answered as the policy says", True, "; ".join(answers), tasks)


def _task_round_trip(bases: list[str]) -> Probe:
    name = "a task submitted now ends done and every instance reads it"
    try:
        answer = call(bases[0], "POST", "/api/tts", {"text": "steady state probe"}, timeout=10)
    except Exception as exc:
        return Probe(name, False, f"POST: {exc!r}")
    if answer.status != 202:
        return Probe(name, False, f"POST answered {answer.status}: {str(answer.body)[:200]}")
    task_id = answer.body["task_id"]
    deadline = time.monotonic() + 20
    states: dict[int, str] = {}
    while time.monotonic() < deadline and len(states) < len(bases):
        for index, base in enumerate(bases):
            if index in states:
                continue
            try:
                read = call(base, "GET", f"/api/task/status/{task_id}", timeout=5)
            except Exception:  # noqa: S112 (asked again until the deadline; a failure says so)
                continue
            if read.status == 200 and read.body["state"] in TERMINAL:
                states[index] = read.body["state"]
        time.sleep(0.05)
    if len(states) < len(bases) or set(states.values()) != {"done"}:
        return Probe(name, False, f"after 20 s: {states or 'never ended'}", [task_id])
    return Probe(name, True, f"{task_id} done, read on {len(bases)} instance(s)", [task_id])
