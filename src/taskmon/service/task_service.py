"""TaskService: accept a synthesis, run it under a permit, record every step.

Guarantees: an accepted task (202) ends done or failed, each step recorded in the monitor before
the next begins; a failing engine or disk fails the task (engine_error, storage_error), never the
worker; a worker that shuts down fails the tasks it had not started as `abandoned`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tenacity import Retrying

from taskmon import metrics
from taskmon.domain import (
    ErrorCode,
    StartOutcome,
    Task,
    TaskError,
    TaskRequest,
    TaskState,
    check_idempotency_key,
    idempotency_outcome,
)
from taskmon.engines import Engine, EngineCancelled, EngineError
from taskmon.journal import SynthesisJournal
from taskmon.ports import (
    BackendUnavailable,
    Holder,
    Lease,
    PermitTimeout,
    Semaphore,
    TaskMonitor,
)
from taskmon.results import ResultStore
from taskmon.service.drain import DrainSwitch
from taskmon.service.errors import Draining, IdempotencyConflict, QueueFull, ServiceClosed
from taskmon.service.lease_keeper import LeaseKeeper
from taskmon.service.ledger import Ledger, LedgerClosed, Mark
from taskmon.service.retries import acquire_permit, store_call

log = logging.getLogger(__name__)

_LEASE_LOST_MESSAGE = (
    "the permit's lease ended before the synthesis did (the worker stalled, or an operator "
    "released the permit); submit the task again"
)


@dataclass(frozen=True, slots=True)
class Submission:
    """An accepted task: new (202), or the one its Idempotency-Key already named (a replay)."""

    task: Task
    replayed: bool


class TaskService:
    """One worker's use case over the ports. Thread-safe: request threads submit, a bounded
    executor runs, the web layer reads; `close()` then `finish()` at shutdown."""

    def __init__(
        self,
        *,
        monitor: TaskMonitor,
        semaphore: Semaphore,
        engine: Engine,
        results: ResultStore,
        worker_id: str,
        max_pending: int,
        permit_timeout_s: float,
        threads: int,
        journal: SynthesisJournal | None = None,
        record_retry_s: float = 10.0,
        wall_clock: Callable[[], float] = time.time,
        boot: str = "",
    ) -> None:
        self.monitor = monitor
        self.semaphore = semaphore
        self.engine = engine
        self.results = results
        self.worker_id = worker_id
        # This process's boot id, recorded with every task it accepts (Task.boot).
        self.boot = boot
        self._permit_timeout_s = permit_timeout_s
        self._now = wall_clock
        self._journal = journal or SynthesisJournal(None)
        self._record_retry_s = record_retry_s
        self._threads = threads
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="taskmon-run")
        self._keeper = LeaseKeeper(interval_s=semaphore.lease_ttl_s / 3)
        self._ledger = Ledger(capacity=max_pending)
        self._mean_synthesis_s = 1.0
        self._in_flight = 0  # syntheses running under a permit now
        self._in_flight_lock = threading.Lock()
        self._drain = DrainSwitch(held=self.pending)

    # -- accepting -------------------------------------------------------------------------

    def submit(self, payload: Any, idempotency_key: str | None = None) -> Submission:
        """Validate and accept one task, or replay the one its Idempotency-Key names.

        Raises InvalidInput (400), IdempotencyConflict (422), QueueFull (429), Draining,
        ServiceClosed.
        """
        request = TaskRequest.parse(payload)
        request = TaskRequest(request.text, self.engine.check_voice(request.voice))
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
            replay = self._replay(idempotency_key, request)
            if replay is not None:
                return replay  # a replay admits nothing: a draining worker answers it too
        if self._drain.on:
            raise Draining("this worker is draining: it admits no new task")
        task = Task.create(
            request,
            worker=self.worker_id,
            now=self._now(),
            idempotency_key=idempotency_key,
            boot=self.boot,
        )
        self._reserve(task)
        # Marked until this thread has handed the task on or let it go: the shutdown never
        # decides a task while its request is still deciding it.
        with self._ledger.marked(task.task_id, Mark.STARTING):
            return self._start_and_queue(task, idempotency_key)

    def _start_and_queue(self, task: Task, idempotency_key: str | None) -> Submission:
        try:
            started = self.monitor.start(task)
        except BackendUnavailable:
            # The start may have landed with its reply lost, or may still land. The executor
            # settles it once the store answers: run the task, or bar the late start. If the
            # executor is gone (closing), the shutdown settles it.
            self._ledger.mark(task.task_id, Mark.UNSETTLED)
            with contextlib.suppress(RuntimeError):
                self._executor.submit(self._run, task, confirm_start=True)
            raise
        except BaseException:
            self._unreserve(task.task_id)
            raise
        if started.outcome is not StartOutcome.CREATED:
            # Another request with the same key won the race between our lookup and start.
            self._unreserve(task.task_id)
            return self._answer_existing(idempotency_key or "", started.outcome, started.task)
        metrics.TASKS_SUBMITTED.labels("created").inc()
        try:
            self._executor.submit(self._run, task)
        except RuntimeError:  # the executor shut down between _reserve and here
            self._abandon(task, "worker shut down before the task ran")
            raise ServiceClosed("worker is shutting down") from None
        return Submission(task, replayed=False)

    def _replay(self, key: str, request: TaskRequest) -> Submission | None:
        existing = self.monitor.find_by_idempotency_key(key)
        if existing is None:
            return None
        outcome = idempotency_outcome(existing, request.fingerprint())
        return self._answer_existing(key, outcome, existing)

    def _answer_existing(self, key: str, outcome: StartOutcome, task: Task) -> Submission:
        if outcome is StartOutcome.CONFLICT:
            metrics.TASKS_SUBMITTED.labels("conflict").inc()
            raise IdempotencyConflict(key, task)
        metrics.TASKS_SUBMITTED.labels("replayed").inc()
        return Submission(task, replayed=True)

    def _reserve(self, task: Task) -> None:
        try:
            full = self._ledger.reserve(task)
        except LedgerClosed:
            raise ServiceClosed("worker is shutting down") from None
        if full is not None:
            metrics.TASKS_SUBMITTED.labels("queue_full").inc()
            raise QueueFull(full, self._retry_after_s(full))
        metrics.TASKS_PENDING.inc()

    def _unreserve(self, task_id: str) -> None:
        if self._ledger.release(task_id):
            metrics.TASKS_PENDING.dec()

    def _retry_after_s(self, pending: int) -> int:
        # Roughly when this worker's backlog drains through its share of the permits.
        try:
            limit = self.semaphore.limit()
        except BackendUnavailable:
            limit = self._threads  # a 429 stays a 429 while the store is away
        share = max(1, min(limit, self._threads))
        return max(1, min(60, math.ceil(pending / share * self._mean_synthesis_s)))

    def pending(self) -> int:
        return self._ledger.count()

    def in_flight(self) -> int:
        """Syntheses running under a permit now."""
        return self._in_flight

    @property
    def draining(self) -> bool:
        return self._drain.on

    def set_draining(self, draining: bool) -> bool:
        """Admit no new task (True) or admit again (False); what runs or is queued goes on.
        True when this changed the state (the change is logged once)."""
        return self._drain.set(draining)

    def pending_ids(self) -> frozenset[str]:
        """The tasks this worker still owns (accepted here and not finished)."""
        return self._ledger.ids()

    # -- running ---------------------------------------------------------------------------

    def _run(self, task: Task, *, confirm_start: bool = False) -> None:
        keep = False
        try:
            with self._ledger.marked(task.task_id, Mark.ACTIVE):
                if confirm_start and not self._settled_to_run(task):
                    return
                self._run_under_permit(task)
        except BackendUnavailable as exc:
            # Closing: the store stayed away past the bounded retries, so this task's end is
            # not recorded. It stays held, and the shutdown fails it `abandoned` once the
            # store answers. Otherwise (the move to running gave up) the self-reaper, or the
            # final reap as the worker leaves the registry, fails it.
            keep = self._ledger.closed
            then = "retried at shutdown" if keep else "the reaper will fail it"
            log.warning("task %s: not recorded (%s); %s", task.task_id, exc, then)
        except Exception:
            # Never lose a task silently: the executor would swallow this exception.
            log.exception("task %s: unexpected failure while running", task.task_id)
        finally:
            if not keep:
                self._unreserve(task.task_id)

    def _run_under_permit(self, task: Task) -> None:
        holder = Holder(worker=self.worker_id, task_id=task.task_id)
        waited_from = time.monotonic()
        try:
            lease = acquire_permit(
                self.semaphore,
                holder,
                timeout_s=self._permit_timeout_s,
                closing=lambda: self._ledger.closed,
            )
        except PermitTimeout as exc:
            closing = self._ledger.closed
            code = ErrorCode.ABANDONED if closing else ErrorCode.PERMIT_TIMEOUT
            self._fail(task, code, str(exc))
            return
        metrics.PERMIT_WAIT_SECONDS.observe(time.monotonic() - waited_from)
        lost = threading.Event()  # set by the keeper when a renewal finds the permit gone
        with lease, self._keeper.keep(lease, on_lost=lost.set):
            running = self._record(task, TaskState.RUNNING, worker=self.worker_id)
            if running is None:
                log.warning("task %s changed under us before it ran; skipping", task.task_id)
                return
            self._synthesize(running, lease, lost)

    def _store_call(self, *, patient: bool = False) -> Retrying:
        """A monitor call that rides out store outages of up to `record_retry_s` (or, when
        `patient`, until the store answers, unless the worker is closing)."""
        return store_call(
            window_s=self._record_retry_s, closing=lambda: self._ledger.closed, patient=patient
        )

    def _settled_to_run(self, task: Task) -> bool:
        """Settle a start that raised: True when the task landed and is to run, False when
        it never reached the store (dropped, and barred from landing later).

        Patient: until the store answers nobody knows whether the task exists. Raises
        BackendUnavailable when the worker closes first; the shutdown then settles it.
        """
        landed = self._store_call(patient=True)(self.monitor.settle_start, task)
        self._ledger.unmark(task.task_id, Mark.UNSETTLED)
        if not landed:
            log.info("task %s: its start never reached the store; dropped", task.task_id)
        return landed

    def _synthesize(self, task: Task, lease: Lease, lost: threading.Event) -> None:
        started = time.monotonic()
        metrics.SYNTHESES_RUNNING.inc()
        with self._in_flight_lock:
            self._in_flight += 1
        self._journal.record("start", task.task_id, lease.fencing)
        try:
            self.engine.synthesize(
                task.text,
                task.voice or self.engine.default_voice,
                self.results.path_for(task.task_id),
                cancel=lost,
            )
        except EngineCancelled:
            self._fail(task, ErrorCode.LEASE_LOST, _LEASE_LOST_MESSAGE)
            return
        except EngineError as exc:
            self._fail(task, ErrorCode.ENGINE_ERROR, str(exc))
            return
        except OSError as exc:
            log.error(
                "task %s: cannot write result: %s; check TASKMON_RESULT_DIR", task.task_id, exc
            )
            self._fail(task, ErrorCode.STORAGE_ERROR, "the result could not be stored")
            return
        except Exception:
            # An engine broke its contract (EngineError only); the task must still end.
            log.exception("task %s: the engine raised unexpectedly", task.task_id)
            self._fail(task, ErrorCode.ENGINE_ERROR, "the engine failed unexpectedly")
            return
        finally:
            self._journal.record("end", task.task_id, lease.fencing)
            metrics.SYNTHESES_RUNNING.dec()
            with self._in_flight_lock:
                self._in_flight -= 1
        elapsed = time.monotonic() - started
        metrics.SYNTHESIS_SECONDS.observe(elapsed)
        self._mean_synthesis_s = 0.8 * self._mean_synthesis_s + 0.2 * elapsed
        if self._lease_lost(lease, lost):
            # Another holder may have run meanwhile: no result under a permit we lost.
            try:
                self.results.path_for(task.task_id).unlink(missing_ok=True)
            except OSError as exc:
                log.error("task %s: its result could not be removed (%s)", task.task_id, exc)
            self._fail(task, ErrorCode.LEASE_LOST, _LEASE_LOST_MESSAGE)
            return
        done = self._record(task, TaskState.DONE)
        if done is not None:
            metrics.TASKS_FINISHED.labels("done", "").inc()

    def _lease_lost(self, lease: Lease, lost: threading.Event) -> bool:
        """Whether the permit was lost before the synthesis ended: the keeper saw it, or
        could not look for a whole TTL (a stalled worker) and the semaphore now says so.
        With the store away the answer is unknown, and the result is kept."""
        if lost.is_set():
            return True
        if not self._keeper.expired_locally(lease):
            return False
        try:
            renewed = lease.renew()
        except Exception as exc:  # the store away or closing: unknown, so keep the result
            log.warning("task %s: could not confirm its permit (%s); keeping the result",
                        lease.holder.task_id, exc)  # fmt: skip
            return False
        if renewed:
            return False
        self._keeper.report_lost(lease)  # counted and logged, as the keeper would have
        return True

    def _fail(self, task: Task, code: ErrorCode, message: str) -> None:
        error = TaskError(code.value, message)
        if self._record(task, TaskState.FAILED, error=error) is not None:
            self._count_failure(task.task_id, error)

    @staticmethod
    def _count_failure(task_id: str, error: TaskError) -> None:
        metrics.TASKS_FINISHED.labels("failed", error.code).inc()
        log.info("task %s failed: %s (%s)", task_id, error.code, error.message)

    def _record(
        self,
        task: Task,
        state: TaskState,
        *,
        error: TaskError | None = None,
        worker: str | None = None,
    ) -> Task | None:
        """Move `task` one step, riding out a store outage of up to `record_retry_s`, or for
        as long as it lasts when the step records a finish (the audio exists: `done` must not
        turn into `abandoned` because Redis restarted meanwhile).

        A retried call whose first attempt did land (its reply was lost) finds the version
        already moved and returns None; re-reading tells that case (our own write: same
        state, version one up, our worker) from a real race, which returns None.
        Raises BackendUnavailable when the store stays away longer.
        """
        now = self._now()
        retrying = self._store_call(patient=state.terminal)
        updated = retrying(
            self.monitor.transition,
            task.task_id,
            expected_version=task.version,
            state=state,
            now=now,
            error=error,
            worker=worker,
            known=task,
        )
        if updated is not None:
            return updated
        current = retrying(self.monitor.get, task.task_id)
        ours = (
            current is not None
            and current.version == task.version + 1
            and current.state is state
            and current.worker == (worker or task.worker)
            and current.error == error
        )
        return current if ours else None

    def _abandon(self, task: Task, message: str) -> None:
        self._fail(task, ErrorCode.ABANDONED, message)
        self._unreserve(task.task_id)

    # -- stopping --------------------------------------------------------------------------

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop accepting; fail or drop the tasks that never started; give running ones
        `timeout_s`. Never raises, and returns within about `timeout_s` plus one store call
        even while the store hangs: what cannot be decided yet stays held, and finish()
        goes on deciding it.
        """
        if not self._ledger.close():
            return
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.semaphore.close()
        deadline = time.monotonic() + timeout_s
        while self.pending() and time.monotonic() < deadline:
            self._wind_down_round(deadline)
            time.sleep(0.05)
        if not self.pending():
            self._keeper.close()

    def finish(self) -> None:
        """After close(): wait for the syntheses still running, then stop renewing leases.

        Leases stay renewed until the engine returns, so the cap holds through a graceful
        restart; if gunicorn kills the worker first, the leases end and the reaper fails
        the tasks as abandoned. Tasks not yet decided (the store away) are retried meanwhile.
        """
        while self.pending():
            self._wind_down_round()
            time.sleep(0.25)
        self._keeper.close()

    def _wind_down_round(self, deadline: float = math.inf) -> None:
        unattended = self._ledger.unattended()
        if not unattended or not self.monitor.ping():
            return  # nothing to decide, or the store is away: one probe, not one per task
        for task in unattended:
            if time.monotonic() >= deadline:
                return
            try:
                self._wind_down(task)
            except BackendUnavailable:
                return  # the store went away: the next round tries again
            except Exception:
                log.exception("task %s: could not be decided at shutdown; retrying", task.task_id)

    def _wind_down(self, task: Task) -> None:
        """One task no thread is on, at close: settle a start that raised, drop a task that
        never reached the store, fail (abandoned) one that is not finished. One attempt per
        store call: the round is what retries."""
        if self._ledger.has(task.task_id, Mark.UNSETTLED):
            landed = self.monitor.settle_start(task)
            self._ledger.unmark(task.task_id, Mark.UNSETTLED)
            if not landed:
                self._unreserve(task.task_id)
                return
        current = self.monitor.get(task.task_id)
        if current is None or current.state.terminal:
            self._unreserve(task.task_id)
            return
        ran = "ended" if current.state is TaskState.RUNNING else "ran"
        error = TaskError(ErrorCode.ABANDONED.value, f"worker shut down before the task {ran}")
        failed = self.monitor.transition(
            task.task_id,
            expected_version=current.version,
            state=TaskState.FAILED,
            now=self._now(),
            error=error,
            known=current,
        )
        if failed is not None:  # else it moved meanwhile: the next round looks again
            # A witness outside the store: in memory mode the store dies with this worker.
            self._journal.record("abandoned", task.task_id, 0)
            self._count_failure(task.task_id, error)
            self._unreserve(task.task_id)
