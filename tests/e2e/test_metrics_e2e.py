"""/metrics on a real `gunicorn -w 4` in Redis mode: every worker reports the same global
figures (read from Redis at scrape time), the per-process histograms aggregate over the
workers, the alert rules name only metrics the stack exports, and a cut Redis answers
`taskmon_redis_up 0` quickly, never a 500."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from taskmon.harness.client import call, wait_terminal
from taskmon.harness.processes import wait_until
from taskmon.harness.redis_server import RedisServer
from taskmon.harness.stack import GunicornInstance
from tests.support.scrapes import (
    Scrape,
    promtool,
    rule_metric_names,
    scrape,
    scrape_every_worker,
    unknown_names,
)
from tests.support.stacks import redis_mode_env

pytestmark = [pytest.mark.redis, pytest.mark.e2e]

WORKERS = 4
MS_PER_CHAR = 20
LONG_TEXT = "x" * 300  # 6 s of synthesis at 20 ms a character: the permit stays held
# Figures that move with time or with the scrape itself, left out of "the same everywhere".
MOVING = ("taskmon_global_oldest_queued_task_age_seconds", "taskmon_global_scrape_duration",
          "taskmon_global_namespace_keys_age_seconds")  # fmt: skip


@dataclass
class Run:
    during: dict[str, Scrape]  # one scrape per worker while 1 task runs and 2 wait
    after: dict[str, Scrape]  # one per worker once all 6 have finished
    submitted: int


def global_figures(one: Scrape) -> dict[str, float]:
    return {
        name: value
        for name, value in one.samples().items()
        if name.startswith(("taskmon_global_", "taskmon_redis_up")) and not name.startswith(MOVING)
    }


def total(one: Scrape, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        value
        for key, value in one.samples().items()
        if key.split("{", 1)[0] == name and all(w in key for w in wanted)
    )


def submit(base_url: str, text: str, key: str | None = None) -> str:
    headers = {"Idempotency-Key": key} if key else None
    answer = call(base_url, "POST", "/api/tts", {"text": text}, headers=headers)
    assert answer.status == 202, answer.body
    return str(answer.body["task_id"])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("metrics-stack")
    with RedisServer(workdir=workdir / "redis") as server:
        env = redis_mode_env(
            server.url, workdir / "journal", limit=1, lease_ttl_ms=3000, ms_per_char=MS_PER_CHAR
        )
        with GunicornInstance(workers=WORKERS, env=env, workdir=workdir) as stack:
            url = stack.base_url
            first = [submit(url, "one", "k-1"), submit(url, "two", "k-2"), submit(url, "three")]
            wait_terminal([url], first)
            long = submit(url, LONG_TEXT)
            wait_until(
                lambda: call(url, "GET", f"/api/task/status/{long}").body["state"] == "running",
                timeout=10, interval=0.02, what="the long task running",
            )  # fmt: skip
            waiting = [submit(url, "four"), submit(url, "five")]
            started = time.monotonic()
            # A task accepted is queued at once; it joins the permit queue when its worker's
            # executor takes it up, a few milliseconds later: wait for the figures to settle.
            last: list[dict[str, float]] = [{}]

            def settled() -> bool:
                now = global_figures(scrape(url))
                same, last[0] = now == last[0], now
                return same

            wait_until(settled, timeout=3, interval=0.2, what="the global figures settled")
            during = scrape_every_worker(url, WORKERS)
            assert time.monotonic() - started < 4, "scraped while the long task still ran"
            wait_terminal([url], [long, *waiting], timeout=30)
            yield Run(during, scrape_every_worker(url, WORKERS), submitted=6)


def test_every_worker_reports_the_same_global_figures(run: Run) -> None:
    figures = {worker: global_figures(one) for worker, one in run.during.items()}
    reference = next(iter(figures.values()))
    for worker, seen in figures.items():
        assert seen == reference, f"{worker} differs"
    assert reference["taskmon_redis_up"] == 1
    assert reference['taskmon_global_tasks{state="running"}'] == 1
    assert reference['taskmon_global_tasks{state="queued"}'] == 2
    assert reference['taskmon_global_tasks_finished_total{state="done"}'] == 3
    assert reference['taskmon_global_tasks_finished_total{state="failed"}'] == 0
    assert reference["taskmon_global_success_rate"] == 1
    assert reference["taskmon_global_concurrency_in_use"] == 1
    assert reference["taskmon_global_concurrency_limit"] == 1
    assert reference["taskmon_global_workers_alive"] == WORKERS
    assert reference["taskmon_global_idempotency_keys"] == 2
    # The pass ran at the first scrape, after at least the first three tasks were made.
    assert reference["taskmon_global_task_keys"] >= 3
    one = next(iter(run.during.values())).samples()
    assert one["taskmon_global_oldest_queued_task_age_seconds"] > 0

    after = {worker: global_figures(one) for worker, one in run.after.items()}
    for seen in after.values():
        assert seen['taskmon_global_tasks_finished_total{state="done"}'] == 6
        assert seen['taskmon_global_tasks{state="queued"}'] == 0
        assert seen["taskmon_global_concurrency_in_use"] == 0


def test_the_per_process_histograms_are_summed_over_the_workers(run: Run) -> None:
    for worker, one in run.after.items():
        posts = total(
            one, "taskmon_http_request_duration_seconds_count",
            endpoint="api.submit", method="POST", status="2xx",
        )  # fmt: skip
        assert posts == run.submitted, worker
        assert total(one, "taskmon_synthesis_seconds_count") == run.submitted, worker
        assert total(one, "taskmon_permit_wait_seconds_count") == run.submitted, worker
        assert total(one, "taskmon_http_request_duration_seconds_count", status="4xx") == 0
        # The status reads are labelled by endpoint, never by task id.
        statuses = [k for k in one.samples() if "api.status" in k]
        assert statuses
        assert all("task_id" not in k for k in statuses)
        assert total(one, "taskmon_degraded") == 0


def test_the_alert_rules_name_only_metrics_the_stack_exports(run: Run) -> None:
    exported = set().union(*(one.names() for one in (*run.during.values(), *run.after.values())))
    rules = rule_metric_names()
    assert len(rules) >= 10
    assert all(rules.values()), "every rule reads some taskmon metric"
    assert unknown_names(rules, exported) == {}
    # The check can fail: a misspelt name is caught.
    assert unknown_names({"typo": {"taskmon_global_worker_alive"}}, exported) == {
        "typo": {"taskmon_global_worker_alive"}
    }


def test_promtool_accepts_the_exposition(run: Run) -> None:
    binary = promtool()
    if binary is None:
        pytest.skip("promtool not installed (TASKMON_TEST_PROMTOOL or PATH); .ci/run installs it")
    for one in (*run.during.values(), *run.after.values()):
        linted = subprocess.run(
            [binary, "check", "metrics"], input=one.text, check=False, capture_output=True,
            text=True, timeout=30,
        )  # fmt: skip
        assert linted.returncode == 0, linted.stdout + linted.stderr


def test_a_cut_redis_answers_redis_up_0_quickly_and_never_500(tmp_path: Path) -> None:
    with RedisServer(workdir=tmp_path / "redis") as server:
        env = redis_mode_env(server.url, tmp_path / "journal", limit=1, lease_ttl_ms=3000)
        with GunicornInstance(workers=2, env=env, workdir=tmp_path) as stack:
            assert scrape(stack.base_url).samples()["taskmon_redis_up"] == 1
            server.stop_for_now()
            for _ in range(6):
                answer = scrape(stack.base_url, timeout=5)
                assert answer.status == 200
                assert answer.seconds < 2.0, "bounded by one call budget (0.8 s)"
                samples = answer.samples()
                assert samples["taskmon_redis_up"] == 0
                assert not [n for n in samples if n.startswith("taskmon_global_tasks")]
            log = (tmp_path / f"gunicorn-{stack.port}.log").read_text()
            lines = log.count("/metrics cannot read the global figures")
            assert 1 <= lines <= 2, f"one line per worker per outage, not per scrape: {lines}"
            server.start()
            wait_until(
                lambda: scrape(stack.base_url).samples()["taskmon_redis_up"] == 1,
                timeout=15, what="taskmon_redis_up 1 again",
            )  # fmt: skip


def test_every_metric_the_stack_exports_is_in_the_metrics_guide(run: Run) -> None:
    exported = set().union(*(one.names() for one in (*run.during.values(), *run.after.values())))
    families = {
        re.sub(r"_(bucket|count|sum|created)$", "", name)
        for name in exported
        if name.startswith("taskmon_")
    }
    guide = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"`(taskmon_[a-z_]+)`", guide))
    assert len(families) >= 20
    missing = sorted(f for f in families if f not in documented)
    assert not missing, f"docs/metrics.md does not describe {missing}"
