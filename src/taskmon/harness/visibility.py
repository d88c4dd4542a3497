"""The I2 checker: after a 202, does every worker return the task?

It reads each task's status over fresh connections from several threads at once, so the reads
spread over the workers of the instance, and reports which worker answered what. A 404 for an
accepted task is a violation. Memory mode under `gunicorn -w N` produces them: that run is the
checker's own negative case.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from taskmon.harness.stack import http_get


@dataclass
class VisibilityReport:
    reads: int = 0
    # task id -> worker id -> HTTP status codes that worker gave
    answers: dict[str, dict[str, list[int]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )

    @property
    def workers_reached(self) -> set[str]:
        return {worker for per_task in self.answers.values() for worker in per_task}

    @property
    def violations(self) -> list[tuple[str, str, int]]:
        """(task, worker, status) of every read that did not return the task."""
        return [
            (task, worker, code)
            for task, per_worker in self.answers.items()
            for worker, codes in per_worker.items()
            for code in codes
            if code != 200
        ]

    def summary(self) -> str:
        return (
            f"{self.reads} reads of {len(self.answers)} tasks reached "
            f"{len(self.workers_reached)} workers; {len(self.violations)} did not return the task"
        )


def probe_visibility(
    base_urls: list[str], task_ids: list[str], *, reads_per_task: int = 24, parallel: int = 8
) -> VisibilityReport:
    """Read every task `reads_per_task` times, spread over `base_urls`, `parallel` at once."""
    jobs = [
        (base_urls[i % len(base_urls)], task_id)
        for task_id in task_ids
        for i in range(reads_per_task)
    ]

    def read(job: tuple[str, str]) -> tuple[str, str, int]:
        base_url, task_id = job
        status, headers, _ = http_get(base_url, f"/api/task/status/{task_id}")
        return task_id, headers.get("X-Worker-Id", "?"), status

    report = VisibilityReport()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for task_id, worker, status in pool.map(read, jobs):
            report.answers[task_id][worker].append(status)
            report.reads += 1
    return report
