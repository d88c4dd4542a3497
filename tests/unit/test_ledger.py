"""The worker's ledger of held tasks: capacity, closing, marks and what the shutdown decides."""

from __future__ import annotations

import pytest

from taskmon.domain import Task, TaskRequest
from taskmon.service.ledger import Ledger, LedgerClosed, Mark
from tests.support.timing import run_threads


def make_task() -> Task:
    return Task.create(TaskRequest("hello"), worker="w:1", now=1.0)


def test_reserve_holds_up_to_capacity_then_reports_the_count() -> None:
    ledger = Ledger(capacity=2)
    a, b, c = make_task(), make_task(), make_task()
    assert ledger.reserve(a) is None
    assert ledger.reserve(b) is None
    assert ledger.reserve(c) == 2, "full: not held, and how many are"
    assert ledger.ids() == {a.task_id, b.task_id}
    assert ledger.release(a.task_id) is True
    assert ledger.release(a.task_id) is False, "twice is harmless"
    assert ledger.reserve(c) is None
    assert ledger.count() == 2


def test_closing_refuses_new_tasks_and_reports_the_first_close() -> None:
    ledger = Ledger(capacity=4)
    held = make_task()
    ledger.reserve(held)
    assert ledger.close() is True
    assert ledger.close() is False
    assert ledger.closed
    with pytest.raises(LedgerClosed):
        ledger.reserve(make_task())
    assert ledger.ids() == {held.task_id}, "what was held stays held"


def test_unattended_leaves_out_the_tasks_a_thread_is_on() -> None:
    ledger = Ledger(capacity=8)
    starting, active, unsettled, idle = (make_task() for _ in range(4))
    for task in (starting, active, unsettled, idle):
        ledger.reserve(task)
    ledger.mark(unsettled.task_id, Mark.UNSETTLED)
    with ledger.marked(starting.task_id, Mark.STARTING), ledger.marked(active.task_id, Mark.ACTIVE):
        assert {t.task_id for t in ledger.unattended()} == {unsettled.task_id, idle.task_id}
        assert ledger.has(active.task_id, Mark.ACTIVE)
    assert not ledger.has(active.task_id, Mark.ACTIVE), "the mark ends with its block"
    assert len(ledger.unattended()) == 4
    assert ledger.has(unsettled.task_id, Mark.UNSETTLED)


def test_capacity_holds_under_threads() -> None:
    ledger = Ledger(capacity=10)
    refused: list[int] = []

    def reserve_many() -> None:
        for _ in range(20):
            full = ledger.reserve(make_task())
            if full is not None:
                refused.append(full)

    run_threads([reserve_many] * 8)
    assert ledger.count() == 10
    assert len(refused) == 8 * 20 - 10
    assert set(refused) == {10}
