"""taskmon's Locust scenarios: `locust -f loadtests/locustfile.py --host http://...`.

Run through `nox -s loadtest` to get the stack, the verdict and the report; run by hand (or by
the Compose `loadtest` profile) for Locust's own web UI against a running service.
"""

# Locust first: it patches the standard library for gevent, and everything imported after it
# (the HTTP client, sockets) must be the patched kind.
import locust  # noqa: I001
from locust import LoadTestShape, events

import os
import time
from typing import Any

import gevent

from loadtests.recording import RECORDER
from loadtests.shapes import FRONT_ENV, STOP_FILE_ENV, shape_from_env
from loadtests.users import IdempotencyStorm, MonitorReader, SubmitAndPoll, SubmitAndStream

__all__ = ["IdempotencyStorm", "MonitorReader", "StagedShape", "SubmitAndPoll", "SubmitAndStream"]

if os.environ.get(FRONT_ENV):
    # Only with a fault proxy in front of the service (the chaos harness's HTTP faults):
    # Locust runs every user class this module holds.
    from loadtests.retrying import RetryingSubmitter

    __all__ += ["RetryingSubmitter"]

LAG_PROBE_S = 0.1
PROGRESS_S = 1.0


class StagedShape(LoadTestShape):
    """The shape named by TASKMON_LOADTEST_SHAPE (loadtests/shapes.py), stage by stage, until
    it ends or the file TASKMON_LOADTEST_STOP_FILE names appears."""

    def __init__(self) -> None:
        super().__init__()
        self.shape = shape_from_env()
        self.stop_file = os.environ.get(STOP_FILE_ENV) or None

    def tick(self) -> tuple[int, float] | None:
        if self.stop_file and os.path.exists(self.stop_file):
            return None
        stage = self.shape.at(self.get_run_time())
        return None if stage is None else (stage.users, stage.spawn_rate)


def _probe_lag() -> None:
    """How late this process wakes a greenlet: a saturated generator shows here first."""
    while True:
        asked = time.monotonic()
        gevent.sleep(LAG_PROBE_S)
        woke = time.monotonic()
        RECORDER.write("lag", t=woke, ms=round((woke - asked - LAG_PROBE_S) * 1000, 3))


def _write_progress(environment: Any, path: str) -> None:
    """A small file the runner reads for its progress line (Locust prints nothing headless)."""
    while True:
        gevent.sleep(PROGRESS_S)
        runner = environment.runner
        if runner is None:
            continue
        total = runner.stats.total
        line = (
            f'{{"t":{time.monotonic()},"users":{runner.user_count},'
            f'"requests":{total.num_requests},"failures":{total.num_failures},'
            f'"rps":{total.current_rps:.3f}}}'
        )
        try:
            with open(path, "w", encoding="utf-8") as out:
                out.write(line)
        except OSError:
            pass
        RECORDER.flush()


@events.test_start.add_listener
def _on_test_start(environment: Any, **_kwargs: Any) -> None:
    # Lets the runner compare arrival times (monotonic) with the service's wall-clock stamps.
    RECORDER.write("clock", t=time.monotonic(), offset=time.time() - time.monotonic())
    gevent.spawn(_probe_lag)
    progress = environment.parsed_options and getattr(
        environment.parsed_options, "taskmon_progress", ""
    )
    if progress:
        gevent.spawn(_write_progress, environment, progress)


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    parser.add_argument("--taskmon-progress", default="", help="file for the runner's progress")


@events.cpu_warning.add_listener
def _on_cpu_warning(environment: Any, cpu_usage: float, **_kwargs: Any) -> None:
    RECORDER.write("cpu", t=time.monotonic(), percent=cpu_usage)


@events.quitting.add_listener
def _on_quitting(**_kwargs: Any) -> None:
    RECORDER.close()


del locust  # imported for its patching only
