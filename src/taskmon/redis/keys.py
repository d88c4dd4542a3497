"""Every Redis key and channel name taskmon uses, built here and nowhere else.

All names of one namespace share the hash tag `{<prefix>}`, so every key a script touches lives
in one Redis Cluster slot and every script also runs on a cluster. Scripts never build names:
callers pass each key in KEYS (and channel names, which are not keys, in ARGV).
"""

from __future__ import annotations

from dataclasses import dataclass

from taskmon.domain import TaskState


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "taskmon"

    @property
    def namespace(self) -> str:
        return "{" + self.prefix + "}"

    def _name(self, *parts: str) -> str:
        return ":".join((self.namespace, *parts))

    # -- tasks -----------------------------------------------------------------------------

    def task(self, task_id: str) -> str:
        """Hash: the task's fields (see redis/codec.py)."""
        return self._name("task", task_id)

    def idempotency(self, key: str) -> str:
        """String: `<task_id> <fingerprint>` of the task an Idempotency-Key created."""
        return self._name("idem", key)

    def state_index(self, state: TaskState) -> str:
        """Sorted set of the ids of tasks in a live state (queued, running), by entry time."""
        if state.terminal:
            raise ValueError("only live states are indexed")
        return self._name("index", state.value)

    @property
    def recent(self) -> str:
        """Sorted set: the ids of the newest tasks by creation time, at most domain.RECENT_MAX
        (trimmed by the scripts that create a task: task_start, task_restore)."""
        return self._name("recent")

    @property
    def counters(self) -> str:
        """Hash: queued, running, done, failed (queued and running current, the others total)."""
        return self._name("counters")

    def task_channel(self, task_id: str) -> str:
        """Pub/sub channel of one task's events."""
        return self._name("events", task_id)

    @property
    def namespace_pattern(self) -> str:
        """SCAN MATCH glob of every key of the namespace (the prefix has no glob characters:
        config.py allows letters, digits and `_.:-` only)."""
        return self._name("*")

    @property
    def task_key_prefix(self) -> str:
        """What every `task(...)` name starts with: counts the task hashes in a SCAN."""
        return self.task("")

    @property
    def idempotency_key_prefix(self) -> str:
        """What every `idempotency(...)` name starts with: counts the keys in a SCAN."""
        return self.idempotency("")

    @property
    def metrics_keyspace(self) -> str:
        """Hash: `keys`, `tasks`, `idempotency`, `at_ms` (Redis clock) of the last complete
        SCAN of the namespace, shared by every worker's /metrics until it expires."""
        return self._name("metrics", "keyspace")

    @property
    def epoch(self) -> str:
        """String: a random id set once per dataset; a new one means Redis lost its data."""
        return self._name("epoch")

    # -- workers ---------------------------------------------------------------------------

    @property
    def workers(self) -> str:
        """Sorted set: worker id -> heartbeat deadline (ms, Redis clock)."""
        return self._name("workers")

    @property
    def workers_promoted(self) -> str:
        """Sorted set: worker id -> when it last came back on Redis after an outage, with
        everything it kept written back and its permits re-registered (ms, Redis clock)."""
        return self._name("workers", "promoted")

    @property
    def workers_state(self) -> str:
        """Hash: worker id -> `last_seen_ms \t state JSON`, what the worker published at its
        last heartbeat (backend, degraded, in flight, pending, draining)."""
        return self._name("workers", "state")

    @property
    def workers_drain(self) -> str:
        """Hash: worker id -> `requested_ms`, an operator's order to drain that worker (read
        by its heartbeat)."""
        return self._name("workers", "drain")

    # -- semaphore -------------------------------------------------------------------------

    @property
    def sem_holders(self) -> str:
        """Sorted set: owner token -> lease end (ms, Redis clock)."""
        return self._name("sem", "holders")

    @property
    def sem_info(self) -> str:
        """Hash: owner token -> `fencing \t worker \t task_id` (tab-separated, no JSON)."""
        return self._name("sem", "info")

    @property
    def sem_queue(self) -> str:
        """Sorted set: waiting token -> ticket (FIFO order)."""
        return self._name("sem", "queue")

    @property
    def sem_waiters(self) -> str:
        """Sorted set: waiting token -> liveness deadline (ms); a dead waiter leaves the queue."""
        return self._name("sem", "waiters")

    @property
    def sem_inboxes(self) -> str:
        """Hash: waiting token -> `inbox \t nonce \t grant_ms \t worker \t task_id`: where to
        announce its grant, and what to grant."""
        return self._name("sem", "inboxes")

    @property
    def sem_state(self) -> str:
        """Hash: `limit` (the cap every worker obeys), `set_by` (`config`: the newest worker's
        configured default, stored at its start-up; `admin`: an operator's, which no start-up
        overrides), `fencing` (the last fencing token granted), `ticket` (the last ticket)."""
        return self._name("sem", "state")

    @property
    def sem_legacy_fencing(self) -> str:
        """String: an older version's fencing counter, read once by `sem_upgrade`."""
        return self._name("sem", "fencing")

    @property
    def sem_legacy_limit(self) -> str:
        """String: an older version's operator-set cap, read once by `sem_upgrade`."""
        return self._name("sem", "limit")

    @property
    def sem_channel(self) -> str:
        """Pub/sub channel: `inbox \t token \t fencing \t grant_ms \t nonce`, a grant made to
        a waiter of the process whose inbox id that is."""
        return self._name("sem", "grants")
