"""What a load run and a rehearsal share: Locust in a process of its own, with its progress
line; the sampler of every instance's stats; the final status sweep; and Ctrl-C.

Locust runs as a subprocess (gevent patches the process it runs in, and the one that manages
the stack must stay unpatched). A first Ctrl-C or SIGTERM sets STOPPING, which every loop here
watches, and raises KeyboardInterrupt in the main thread; later ones are ignored, so the
teardown that follows can stop every process it started.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from loadtests.evidence import ProbeFailure, Sample, SweepResult
from loadtests.report import EXIT_UNKNOWN
from loadtests.shapes import FRONT_ENV, RETRYING_USERS, SHAPES, STOP_FILE_ENV, TASK_DEADLINE_S
from taskmon.harness.client import TERMINAL, call
from taskmon.harness.processes import ManagedProcess

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
SAMPLE_EVERY_S = 0.5
PROGRESS_EVERY_S = 5.0
STOPPING = threading.Event()  # set on Ctrl-C: Locust, the sweep and its threads give up at once


class ServerError(Exception):
    """A probe answered with a 5xx."""


class Sampler(threading.Thread):
    """Reads every target's stats and permits every SAMPLE_EVERY_S, over fresh connections.

    A probe the service fails (no connection, a timeout, a 5xx) is kept in `failures`; an
    answer that is not the stats (a 4xx, a body of another shape) is only skipped.
    """

    def __init__(self, targets: list[str], *, permits: bool, timeout_s: float = 2.0) -> None:
        super().__init__(name="loadtest-sampler", daemon=True)
        self.targets = targets
        # The permit holders only judge I1 when there are no journals (--target): else they
        # would be one more Redis read per sample on the service under load, for nothing.
        self.permits = permits
        self.timeout_s = timeout_s
        self.samples: list[Sample] = []
        self.failures: list[ProbeFailure] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE_EVERY_S):
            for base in self.targets:
                if self.stopping.is_set():
                    return
                self._probe(base)

    def _probe(self, base: str) -> None:
        t = time.monotonic()
        try:
            sample = self.sample(base)
        except TimeoutError as exc:
            failure = ProbeFailure(t, base, "timeout", str(exc), time.monotonic())
        except (OSError, http.client.HTTPException) as exc:
            failure = ProbeFailure(t, base, "connection", repr(exc), time.monotonic())
        except ServerError as exc:
            failure = ProbeFailure(t, base, "server error", str(exc), time.monotonic())
        except (KeyError, TypeError, ValueError, AttributeError):
            return
        else:
            if not self.stopping.is_set():
                self.samples.append(sample)
            return
        # A probe cut by the teardown that follows stop() says nothing of the service.
        if not self.stopping.is_set():
            self.failures.append(failure)

    def _get(self, base: str, path: str) -> Any:
        answer = call(base, "GET", path, timeout=self.timeout_s)
        if answer.status >= 500:
            raise ServerError(f"{path} answered {answer.status} from {answer.worker}")
        return answer.body

    def sample(self, base: str) -> Sample:
        t = time.monotonic()
        stats = self._get(base, "/api/monitor/stats")
        holders = None
        if self.permits:
            permits = self._get(base, "/api/monitor/permits")
            if permits.get("worker") == stats["worker"]:  # both answers from one worker
                holders = permits["in_use"]
        return Sample(
            t=t,
            instance=base,
            worker=stats["worker"],
            backend=stats["backend"],
            queued=stats["counts"]["queued"],
            running=stats["counts"]["running"],
            in_use=stats["concurrency"]["in_use"],
            limit=stats["concurrency"]["limit"],
            holders=holders,
        )

    def in_use(self) -> int | str:
        """The permits in use at the latest sample, for the progress line."""
        return self.samples[-1].in_use if self.samples else "?"

    def stop(self) -> None:
        """Stop sampling; returns once the thread is done (a probe in flight is waited for,
        and whatever it finds is dropped)."""
        self.stopping.set()
        self.join(self.timeout_s * (2 if self.permits else 1) + 1)


@dataclass(frozen=True)
class LoadPlan:
    """What Locust runs: a shape, rescaled, and a file whose creation ends it early."""

    shape: str
    users: int | None = None
    duration_s: float | None = None
    stop_file: Path | None = None
    # A URL in front of the first target (a fault proxy): retrying submitters join the users
    # and send each submission's first try there (loadtests/retrying.py).
    front: str | None = None


def run_locust(
    plan: LoadPlan, targets: list[str], run_dir: Path, run_id: str, sampler: Sampler
) -> tuple[float, float, list[str]]:
    """Locust, headless, to the shape's end; (start, end) monotonic times and any trouble."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "TASKMON_LOADTEST_TARGETS": ",".join(targets),
        "TASKMON_LOADTEST_SHAPE": plan.shape,
        "TASKMON_LOADTEST_RECORD_DIR": str(run_dir / "records"),
        "TASKMON_LOADTEST_RUN_ID": run_id,
    }
    users = plan.users
    if plan.front:
        env[FRONT_ENV] = plan.front
        # Locust counts fixed-count users within the total: add them, take none away.
        users = (users or SHAPES[plan.shape].peak_users) + RETRYING_USERS
    else:
        env.pop(FRONT_ENV, None)  # one left in the caller's shell must not join the users
    if users:
        env["TASKMON_LOADTEST_USERS"] = str(users)
    if plan.duration_s:
        env["TASKMON_LOADTEST_DURATION_S"] = str(plan.duration_s)
    if plan.stop_file:
        env[STOP_FILE_ENV] = str(plan.stop_file)
    shape = SHAPES[plan.shape].scaled(plan.users, plan.duration_s)
    progress = run_dir / "progress.json"
    argv = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--host", targets[0], "--csv", str(run_dir / "locust"), "--csv-full-history",
        "--html", str(run_dir / "locust.html"), "--only-summary", "--exit-code-on-error", "0",
        # Users finish the task they are on (a poll, a stream) when the shape ends them.
        "--stop-timeout", str(int(TASK_DEADLINE_S) + 10),
        "--loglevel", "WARNING", "--taskmon-progress", str(progress),
    ]  # fmt: skip
    trouble: list[str] = []
    started = time.monotonic()
    locust = ManagedProcess(argv, env=env, log_path=run_dir / "locust.log", cwd=ROOT)
    try:
        deadline = started + shape.duration_s + TASK_DEADLINE_S + 60
        last_line = 0.0
        while locust.alive() and not STOPPING.is_set():
            if time.monotonic() > deadline:
                trouble.append(f"Locust ran past its shape's {shape.duration_s:.0f} s; stopped")
                break
            if time.monotonic() - last_line >= PROGRESS_EVERY_S:
                # A plan that ends on its stop file has no length to show, only a bound.
                planned = None if plan.stop_file else shape.duration_s
                print_progress(progress, started, planned, sampler.in_use())
                last_line = time.monotonic()
            time.sleep(0.2)
    finally:
        code = locust.stop()
    if code not in (0, None) and not trouble:
        trouble.append(f"Locust exited {code}: see {run_dir / 'locust.log'}\n{locust.log_tail(15)}")
    return started, time.monotonic(), trouble


def print_progress(
    progress: Path, started: float, duration_s: float | None, in_flight: object
) -> None:
    try:
        state = json.loads(progress.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        state = {}
    print(
        f"  {time.monotonic() - started:5.0f}{'' if duration_s is None else f'/{duration_s:.0f}'} s"
        f"  users {state.get('users', 0):3}  "
        f"{state.get('rps', 0.0):6.1f} rps  {state.get('requests', 0):6} requests  "
        f"{state.get('failures', 0):4} failures  in flight {in_flight}",
        flush=True,
    )


def sweep(targets: list[str], task_ids: list[str], drain_s: float) -> dict[str, SweepResult]:
    """Every accepted task, read until it is done or failed or the drain ends (I5)."""
    deadline = time.monotonic() + drain_s
    results = {task_id: SweepResult(task_id, None, None) for task_id in task_ids}

    def settle(index_and_id: tuple[int, str]) -> None:
        index, task_id = index_and_id
        found = results[task_id]
        turn = index
        while time.monotonic() < deadline and not STOPPING.is_set():
            base = targets[turn % len(targets)]
            turn += 1
            try:
                answer = call(base, "GET", f"/api/task/status/{task_id}", timeout=5)
            except (OSError, http.client.HTTPException, ValueError):
                time.sleep(0.2)
                continue
            found.statuses.append(answer.status)
            if answer.status == 200:
                found.state, found.worker = answer.body["state"], answer.body["worker"]
                if found.state in TERMINAL:
                    return
            time.sleep(0.1 if answer.status == 404 else 0.3)

    pool = ThreadPoolExecutor(max_workers=16)
    try:
        list(pool.map(settle, enumerate(task_ids)))
    finally:
        pool.shutdown(wait=True, cancel_futures=STOPPING.is_set())
    return results


@contextlib.contextmanager
def interrupts_as_keyboard() -> Iterator[None]:
    """Ctrl-C and SIGTERM (a CI runner's cancel) interrupt the run once; while the teardown
    that follows stops the processes, further signals are ignored so it can finish."""

    def raise_once(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        STOPPING.set()
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, raise_once) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def gather_then_report(
    command: str,
    noun: str,
    gather: Callable[[list[str]], None],
    report: Callable[[list[str]], int],
    run_dir: Path,
) -> int:
    """Gather the evidence, then judge and report it whatever happened: an interruption or
    any breakage becomes trouble (the verdict unknown, exit 3), never a lost report."""
    trouble: list[str] = []
    with interrupts_as_keyboard():
        try:
            gather(trouble)
        except KeyboardInterrupt:
            trouble.append(f"interrupted: the {noun} stopped early, so its verdict is unknown")
        except Exception as exc:  # whatever broke, the report says so and the code is 3
            trouble.append(f"the {noun} broke off: {type(exc).__name__}: {exc}")
        try:
            return report(trouble)
        except Exception as exc:
            print(
                f"{command}: the evidence in {run_dir} could not be judged: {exc!r}",
                file=sys.stderr,
            )
            return EXIT_UNKNOWN
