"""Worker registry and reaper: the tasks of a dead worker end `failed / abandoned` (I5).

Each worker heartbeats every third of the lease TTL with a deadline one TTL ahead (Redis clock).
Every worker also runs the reaper: for each worker past its deadline, every live task that it
holds (queued in its executor or running) is failed as abandoned. Running it everywhere is
safe: a transition is a compare-and-set on the task's version, so of several reapers exactly
one fails each task. A task is failed within about 1.5 TTL of its worker's death; its permit
returns on its own when the lease ends (one TTL). A worker that leaves sets its deadline to now.

An expired worker stays listed (as expired) for the retention, the task TTL: a task of its that
appears later is still reaped. That happens when a start sat at a hung Redis as the worker died
or left: the script runs when Redis wakes, and nobody would ever run or fail the task.

Heartbeats that lapsed while Redis itself was away (or while this reaper could not reach it)
are not judged: a reaper judges only once it has been in contact with Redis for a whole TTL, so
every live worker has had that TTL to heartbeat again (and, under the failover layer, to write
back what it finished meanwhile). A worker that stays cut from Redis while others reach it is
still taken for dead after a TTL of their contact: its tasks are failed `abandoned`. That is a
presumption: when it comes back, a `done` it reached (written back, or recorded after the
re-promotion) overrules it, one version past the reaper's (domain.overrules_abandoned); any
other end it reached is dropped.

Workers are listed and judged by their full identity, `<hostname>:<pid>/<boot>` (domain.
worker_key), the boot a random id each process draws at start: a container restarted with the
same hostname and pid within a TTL heartbeats a new entry, so the old boot's entry still
expires and its tasks are reaped; two live containers sharing hostname and pid keep two entries
and never reap each other's tasks. A task is judged by the worker and boot its record names. A
record an older version wrote has no boot: its identity is the bare name, which is what that
version heartbeats, so it is reaped when that heartbeat lapses.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from typing import cast

import redis

from taskmon.domain import ErrorCode, TaskError, TaskState, public_name, worker_key
from taskmon.ports import BackendRefused, BackendUnavailable, TaskMonitor
from taskmon.redis.errors import unavailable_as
from taskmon.redis.keys import Keys
from taskmon.redis.scripts import ScriptKeys, ScriptSet
from taskmon.worker_state import PublishedWorker, WorkerState

log = logging.getLogger(__name__)

# A worker's published state is dropped once it has not been heard from for this many TTLs.
STALE_TTLS = 6

# The keys each script takes, in KEYS order, as names of Keys attributes (see scripts.py).
SCRIPT_KEYS: ScriptKeys = {
    "worker_heartbeat": ("workers", "workers_state", "workers_drain"),
    "workers_states": ("workers", "workers_state", "workers_drain"),
    "worker_drain": ("workers", "workers_drain"),
    "workers_expired": ("workers",),
    "worker_promoted": ("workers_promoted", "epoch"),
    "workers_not_back": ("workers", "workers_promoted"),
}


class WorkerRegistry:
    """This worker's entry in the registry, and what the registry says of the others.

    The entry is the worker's full identity (`identity`: the public `worker_id` and the
    process's `boot`); `expired` and `alive` list identities. Every method raises
    BackendUnavailable when Redis cannot serve it (see redis/errors.py).
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        worker_id: str,
        ttl_s: float,
        retention_s: float = 86_400,
        *,
        boot: str = "",
    ) -> None:
        self._client = client
        self._keys = keys
        self.worker_id = worker_id
        self.boot = boot
        self.identity = worker_key(worker_id, boot)
        self._ttl_ms = int(ttl_s * 1000)
        self._retention_ms = int(retention_s * 1000)
        # A record of a worker not heard from for this long is dropped from the workers list.
        self.stale_ms = STALE_TTLS * self._ttl_ms
        self._scripts = ScriptSet(client, SCRIPT_KEYS)
        # Set by the composition root once the service exists: this worker's state, published
        # with each heartbeat, and who hears whether an operator ordered it to drain.
        self.report: Callable[[], WorkerState] | None = None
        # `on_drain` answers whether the order changed the worker's state.
        self.on_drain: Callable[[bool], bool] | None = None
        # The maintenance thread heartbeats, and so does a request that drains this worker:
        # one at a time, or a beat that read the state (or the order) before the other
        # changed it publishes the old one last.
        self._beating = threading.Lock()
        self._left = False  # after leave(), a late beat (a drain request's) would revive it

    def heartbeat(self, ttl_ms: int | None = None) -> None:
        """Say this worker is alive for a TTL, publish its state and read its drain order
        (passed to `on_drain`). A TTL of 0 leaves: the state and any order are removed, and
        no later heartbeat brings the worker back."""
        ttl = self._ttl_ms if ttl_ms is None else ttl_ms
        with self._beating:
            if self._left:
                return
            order = self._beat(ttl)
            self._left = ttl == 0
            if ttl and self.on_drain is not None and self.on_drain(order):
                self._beat(ttl)  # the state just changed (drained, or not): publish it now

    def _beat(self, ttl: int) -> bool:
        """One heartbeat script: whether a drain order for this worker stands."""
        state = self.report().encode() if self.report is not None and ttl else ""
        with unavailable_as("recording the heartbeat of this worker"):
            _, order = self._scripts["worker_heartbeat"](
                keys=[self._keys.workers, self._keys.workers_state, self._keys.workers_drain],
                args=[self.identity, ttl, state, self.stale_ms],
            )
        return bool(order)

    def published(self) -> list[PublishedWorker]:
        """Every worker's last published state, by worker id; workers not heard from for
        `stale_ms` are gone. Raises BackendUnavailable when Redis does not answer."""
        with unavailable_as("reading the workers' states"):
            reply = self._scripts["workers_states"](
                keys=[self._keys.workers, self._keys.workers_state, self._keys.workers_drain]
            )
        now_ms = int(reply[0])
        found: list[PublishedWorker] = []
        for i in range(1, len(reply), 4):
            worker, record, deadline, order = str(reply[i]), str(reply[i + 1]), reply[i + 2], \
                reply[i + 3]  # fmt: skip
            seen_ms, _, body = record.partition("\t")
            seen = int(seen_ms) if seen_ms.isdigit() else 0
            # Listed by its public name (X-Worker-Id); the record is the full identity's.
            state = WorkerState.decode(public_name(worker), body, (now_ms - seen) / 1000)
            if state is None:
                continue
            ordered = (now_ms - int(order)) / 1000 if order else None
            alive = deadline is not None and int(deadline) > now_ms
            found.append(PublishedWorker(state, alive, ordered))
        return sorted(found, key=lambda p: p.state.worker)

    def order_drain(self, worker: str, drain: bool) -> bool | None:
        """Order `worker` to drain (or cancel the order): it obeys at its next heartbeat.
        None when no such worker is alive; else whether an order now stands. Raises
        BackendUnavailable when Redis does not answer."""
        with unavailable_as("recording a drain order"):
            # Orders go to full identities; an operator names the public X-Worker-Id (two
            # processes of one name, twins across containers, both get the order).
            records = cast("dict[str, str]", self._client.hgetall(self._keys.workers_state))
            targets = [n for n in records if worker in (n, public_name(n))] or [worker]
            kinds = [
                int(self._scripts["worker_drain"](
                    keys=[self._keys.workers, self._keys.workers_drain],
                    args=[target, 1 if drain else 0],
                )[0])
                for target in targets
            ]  # fmt: skip
        standing = [kind for kind in kinds if kind != -1]
        return None if not standing else standing[0] == 1

    def mark_promoted(self, epoch_seen: str | None) -> int:
        """Say that this worker is back on Redis, everything it kept written back and its
        permits re-registered; returns the mark (ms, Redis clock) for `others_not_back`, or
        -1 (nothing marked) when the dataset is no longer `epoch_seen` (Redis lost its data
        since this worker looked)."""
        with unavailable_as("recording this worker's re-promotion"):
            mark = self._scripts["worker_promoted"](
                keys=[self._keys.workers_promoted, self._keys.epoch],
                args=[self.identity, self._retention_ms, epoch_seen or ""],
            )
        return int(mark)

    def others_not_back(self, began_ms: int, mark_ms: int) -> int:
        """How many other workers alive when this worker's outage began (at `began_ms`, Redis
        clock) have not said since that they are back; -1 when this worker's own mark
        (`mark_ms`) is gone, i.e. Redis lost its data and the registry cannot tell. Alive
        means a heartbeat deadline up to one heartbeat TTL before `began_ms`: a worker that
        lost Redis first, while this one had not noticed yet, still counts. A worker that
        died just before the outage, or never lost Redis, counts as not back: the caller
        then waits its whole settling window, as it would without this."""
        with unavailable_as("reading which workers are back on Redis"):
            missing = self._scripts["workers_not_back"](
                keys=[self._keys.workers, self._keys.workers_promoted],
                args=[self.identity, began_ms - self._ttl_ms, began_ms, mark_ms],
            )
        return int(missing)

    def leave(self) -> None:
        """Expire at once: the other workers' reapers now fail any task of ours that
        appears, for the retention. For good: later heartbeats do nothing."""
        self.heartbeat(ttl_ms=0)

    def expired(self) -> list[str]:
        """Workers past their deadline, within the retention (older ones are dropped)."""
        with unavailable_as("listing the expired workers"):
            expired = self._scripts["workers_expired"](
                keys=[self._keys.workers], args=[self._retention_ms]
            )
        return [str(w) for w in expired]

    def alive(self) -> list[str]:
        expired = set(self.expired())
        with unavailable_as("listing the workers"):
            listed = [str(w) for w in self._client.zrange(self._keys.workers, 0, -1)]
        return [w for w in listed if w not in expired]


class Reaper:
    def __init__(self, client: redis.Redis, keys: Keys, registry: WorkerRegistry,
                 monitor: TaskMonitor) -> None:  # fmt: skip
        self._client = client
        self._keys = keys
        self._registry = registry
        self._monitor = monitor
        # The ids this worker still runs; set by the composition root once the service
        # exists. None: only dead workers are reaped.
        self.local_tasks: Callable[[], Collection[str]] | None = None
        # The ids this worker finished or moved while degraded and has not written back yet:
        # not orphans either.
        self.unsynced: Callable[[], Collection[str]] | None = None
        # Hears how many tasks each reap failed `abandoned` (the composition root counts them
        # in the metrics: no worker of their own is left to count them).
        self.on_abandoned: Callable[[int], None] | None = None

    def live_task_owners(self) -> dict[str, str]:
        """Every queued or running task id with the full identity of the worker that holds
        it (the bare name for a record without a boot, an older version's): one scan."""
        with unavailable_as("listing the live tasks"):
            return self._live_task_owners()

    def _live_task_owners(self) -> dict[str, str]:
        ids: list[str] = []
        for state in (TaskState.QUEUED, TaskState.RUNNING):
            ids.extend(str(i) for i in self._client.zrange(self._keys.state_index(state), 0, -1))
        if not ids:
            return {}
        pipe = self._client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hmget(self._keys.task(task_id), ["worker", "boot"])
        owners = pipe.execute()
        return {
            task_id: worker_key(str(worker), str(boot or ""))
            for task_id, (worker, boot) in zip(ids, owners, strict=True)
            if worker
        }

    def reap_once(self) -> list[str]:
        """Fail the live tasks of every expired worker, and this worker's own orphans (live
        in the store, no longer run here: lost in an outage)."""
        me = self._registry.identity
        dead = set(self._registry.expired()) - {me}
        if not dead and self.local_tasks is None:
            return []
        # Read the store first, then the local set: a task is registered locally before it
        # is written to the store, so nothing running here can look orphaned.
        owners = self.live_task_owners()
        local = set(self.local_tasks()) if self.local_tasks is not None else None
        if local is not None and self.unsynced is not None:
            local |= set(self.unsynced())
        of_dead = [task_id for task_id, owner in owners.items() if owner in dead]
        orphans = [
            task_id
            for task_id, owner in owners.items()
            if local is not None and owner == me and task_id not in local
        ]
        of_dead_failed = self._fail_all(of_dead, "stopped")
        orphans_failed = self._fail_all(orphans, "lost track of it during a store outage")
        if (of_dead_failed or orphans_failed) and self.on_abandoned is not None:
            self.on_abandoned(len(of_dead_failed) + len(orphans_failed))
        if of_dead_failed or orphans_failed:
            gone = sorted({owners[task_id] for task_id in of_dead_failed})
            log.warning("failed %d task(s) as abandoned (of dead workers: %s; own orphans: %d)",
                        len(of_dead_failed) + len(orphans_failed), ", ".join(gone) or "none",
                        len(orphans_failed))  # fmt: skip
        return [*of_dead_failed, *orphans_failed]

    def _fail_all(self, task_ids: list[str], why: str) -> list[str]:
        failed = []
        for task_id in task_ids:
            task = self._monitor.get(task_id)
            if task is None or task.state.terminal:
                continue
            done = self._monitor.transition(
                task_id,
                expected_version=task.version,
                state=TaskState.FAILED,
                now=time.time(),
                error=TaskError(ErrorCode.ABANDONED.value, f"worker {task.worker} {why}"),
                known=task,
            )
            if done is not None:
                failed.append(task_id)
        return failed


class Maintenance:
    """The worker's background duty: heartbeat and reap every third of the lease TTL.

    The reaper judges only after a whole TTL (three intervals) of unbroken contact with
    Redis; `on_unavailable` hears of every tick Redis did not answer (the failover trips).
    """

    def __init__(
        self,
        registry: WorkerRegistry,
        reaper: Reaper,
        interval_s: float,
        on_unavailable: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._registry = registry
        self.reaper = reaper
        self._interval_s = interval_s
        self._on_unavailable = on_unavailable
        self._contact_since: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="taskmon-maintenance", daemon=True)

    def start(self) -> None:
        self._safe_tick()
        self._thread.start()

    def _safe_tick(self) -> None:
        try:
            self._registry.heartbeat()
            if self._contact_since is None:
                self._contact_since = time.monotonic()
            # A whole TTL of contact first: heartbeats that lapsed while Redis (or this
            # worker's way to it) was away are not a death.
            if time.monotonic() - self._contact_since >= 3 * self._interval_s:
                self.reaper.reap_once()
        except BackendUnavailable as exc:
            self._contact_since = None
            log.warning("heartbeat/reaper could not reach Redis (%s); retrying", exc)
            if self._on_unavailable is not None:
                self._on_unavailable(exc)
        except BackendRefused as exc:
            # Logged once, with what to grant, where it was met: no traceback at every tick.
            log.debug("heartbeat/reaper refused by Redis' ACL (%s); retrying", exc)
        except Exception:
            log.exception("heartbeat/reaper failed; retrying")

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._safe_tick()

    def close(self) -> None:
        """Stop; reap once more, then leave (expire at once in) the registry.

        The last reap fails our own live tasks that no thread holds any more (one whose move
        to `running` gave up in an outage shortly before shutdown, say); what appears later
        the other workers' reapers fail. If Redis does not answer, our heartbeat expires on
        its own and they do the same one TTL later.
        """
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)  # no tick of ours runs after the last reap
        try:
            self.reaper.reap_once()
            self._registry.leave()
        except BackendUnavailable as exc:
            log.warning("could not reap and leave the registry (%s); the other workers' "
                        "reapers will fail this worker's tasks when its heartbeat expires",
                        exc)  # fmt: skip
