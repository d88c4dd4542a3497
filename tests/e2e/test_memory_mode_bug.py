"""The bug taskmon exists to fix, recorded as a test: memory mode under `gunicorn -w 4`.

Each worker keeps its own tasks. Status reads over fresh connections land on other workers,
which answer 404 for a task that was accepted. This is the negative case for the visibility
checker (I2): the checker must flag this run, and the Redis backend must make it pass.
"""

from __future__ import annotations

import pytest

from taskmon.harness.stack import GunicornInstance
from taskmon.harness.visibility import probe_visibility
from tests.support.http import PinnedClient

pytestmark = pytest.mark.e2e


def test_fresh_connections_reach_other_workers_which_answer_404(
    memory_stack: GunicornInstance,
) -> None:
    task_ids = []
    owners = {}
    for n in range(6):
        client = PinnedClient(memory_stack.base_url)
        try:
            status, body = client.json("POST", "/api/tts", {"text": f"visible? {n}"})
            assert status == 202
            task_ids.append(body["task_id"])
            owners[body["task_id"]] = next(iter(client.workers_seen))
        finally:
            client.close()

    report = probe_visibility([memory_stack.base_url], task_ids, reads_per_task=24, parallel=8)

    assert len(report.workers_reached) >= 2, report.summary()
    assert report.violations, f"memory mode should break I2 under -w 4: {report.summary()}"
    for task_id, worker, code in report.violations:
        assert code == 404
        assert worker != owners[task_id], "the owner itself must always know its task"
    for task_id, per_worker in report.answers.items():
        assert set(per_worker.get(owners[task_id], [200])) == {200}
