"""Whether this worker runs on Redis or on its own memory, and the thread that brings it back.

One `Failover` per worker process. The failover adapters (monitor, semaphore) ask it which way
to go before each call, and `trip()` it on the first call that Redis does not answer: from then
on every call goes to memory at once, so no request waits behind a dead connection; the cost of
detection is one call budget (taskmon.redis.connection), 0.8 s with the defaults.

While degraded, the thread probes Redis with exponential backoff and full jitter (so the
workers of a fleet do not knock in step), from `min_backoff_s` up to `max_backoff_s`. When Redis
answers it re-promotes in two steps: each participant writes back what it kept (outside the
lock: tasks), then, under the lock that degraded-mode writes take, each finishes (the semaphore
re-registers every permit still held) and the switch flips. Nothing written locally can slip
between the last write-back and the flip. A failure in either step aborts the re-promotion and
the probing goes on.

After a re-promotion comes a settling window (`settling()`), in which the semaphore grants
nothing new through Redis: the other workers, back up to a probe interval later, must first
re-register what they carried through the outage. The worker says it is back (`announce`), and
the window ends early once every worker alive when its outage began has said so after that
moment (`not_back`, looked up every SETTLE_LOOK_S by this thread). The moment is fixed once, in
Redis time, so a mark from an earlier up-period, written before that worker degraded again,
never counts; "alive" reaches one heartbeat TTL further back, for a worker that lost Redis
well before this one noticed. After Redis lost its data the window always runs its length:
the registry and the marks are gone with it, so they cannot tell who still holds what (the
mark is refused when the dataset changed since the last look, and the look answers "cannot
tell" once this worker's own mark is gone).

A worker that came back and marked during this worker's outage, then lost Redis again on its
own, counts as back. That is the partial outage of docs/invariants.md (the reachable workers'
cap plus the cut worker's share or carried permits), which a window of any fixed length does
not prevent either: its permits were re-registered when it marked, and Redis counts them
until their leases end.

While healthy, the thread checks every `healthy_interval_s` whether Redis lost its data (the
epoch key changed: restarted empty, flushed) and, if so, has every participant write back what
this worker still holds; it also lets participants refresh what they need for the next outage
(the fallback share).

Each switch is logged once, at WARNING, with what it means and what to check; the repeats of
other parts' warnings are held back by OutageLogFilter and counted in the re-promotion line.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Protocol

from taskmon import metrics
from taskmon.ports import BackendRefused, BackendUnavailable

log = logging.getLogger(__name__)

# How often, in a settling window, this thread asks Redis whether every worker is back.
SETTLE_LOOK_S = 0.1


class Participant(Protocol):
    """A failover adapter: what it does at each switch. Redis calls raise BackendUnavailable."""

    def on_degrade(self) -> None:
        """Under the lock, as the worker degrades: no Redis call."""
        ...

    def write_back(self, *, store_lost: bool) -> int:
        """Before promotion, outside the lock: write back what was kept; how many written.
        `store_lost`: Redis forgot its data, so write back everything still held."""
        ...

    def on_promote(self, *, store_lost: bool) -> int:
        """Under the lock, just before the flip: finish the write-back; how many written."""
        ...

    def refresh(self) -> None:
        """While healthy, every interval: keep what the next outage will need up to date."""
        ...


class Failover:
    def __init__(
        self,
        *,
        target: str,
        policy: str,
        probe: Callable[[], None],
        store_lost: Callable[[], bool],
        healthy_interval_s: float = 1.0,
        min_backoff_s: float = 0.05,
        max_backoff_s: float = 1.0,
        on_promoted: Callable[[], int] | None = None,
        settle_s: float = 0.0,
        announce: Callable[[], int] | None = None,
        not_back: Callable[[int, int], int] | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        """`probe()` raises BackendUnavailable unless Redis answers now; `store_lost()` says
        whether Redis lost its data since the last call (raising the same way);
        `on_promoted()` returns how many log lines were held back during the outage.
        `settle_s`: how long after a re-promotion `settling()` stays true, for the other
        workers (back one probe interval later at most) to have written back and
        re-registered what they kept. `announce()` says this worker is back and returns its
        mark (ms, Redis clock; -1 when Redis lost its data since the last look);
        `not_back(began_ms, mark_ms)` counts the other workers alive at `began_ms` not back
        since (-1: cannot tell, the mark is gone): at 0 the window ends early. Both may
        raise BackendUnavailable; the window then runs its length."""
        self.target = target
        self.policy = policy
        self._probe = probe
        self._store_lost = store_lost
        self._healthy_interval_s = healthy_interval_s
        self._min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self._on_promoted = on_promoted or (lambda: 0)
        self._rng = rng
        # Degraded-mode writes hold it, so a re-promotion's last write-back sees them all.
        self.lock = threading.RLock()
        self._participants: list[Participant] = []
        self._degraded = False
        self._since = 0.0
        self.settle_s = settle_s
        self._settled_at = 0.0  # monotonic
        self._announce = announce
        self._not_back = not_back
        # Bumped whenever a window opens: a look or a mark meant for an older one is dropped.
        self._window = 0
        # (began_ms, mark_ms) while the open window may still end early.
        self._settle_look: tuple[int, int] | None = None
        self.outages = 0
        self._checking = threading.Lock()  # one look at the epoch at a time
        # Redis lost its data and the write-back has not completed yet: kept across failed
        # attempts, since the epoch says so only once.
        self._lost_pending = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._promoted = threading.Condition(self.lock)
        self._thread: threading.Thread | None = None

    @property
    def degraded(self) -> bool:
        return self._degraded

    def settling(self) -> float:
        """Seconds left of the settling window after the last re-promotion (0 when over).
        Local: no Redis call."""
        return max(0.0, self._settled_at - time.monotonic())

    def wait_settled(self, timeout: float) -> None:
        """Block up to `timeout` seconds, or until the settling window is over (it may end
        early, when every worker is back) or a trip degrades this worker."""
        with self._promoted:
            left = self.settling()
            if left > 0 and not self._degraded:
                self._promoted.wait(min(timeout, left))

    def join(self, participant: Participant) -> None:
        self._participants.append(participant)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="taskmon-failover", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def trip(self, exc: BaseException) -> None:
        """Degrade now (a Redis call failed): later calls go to memory until re-promotion."""
        with self.lock:
            if self._degraded:
                return
            self._degraded = True
            self._since = time.monotonic()
            self.outages += 1
            for participant in self._participants:
                participant.on_degrade()
            # Acquirers waiting out a settling window go to memory now, not at its end.
            self._promoted.notify_all()
        metrics.DEGRADED.set(1)
        metrics.FAILOVER_SWITCHES.labels("memory").inc()
        meaning = (
            "each worker grants at most its share of TASKMON_CONCURRENCY_LIMIT"
            if self.policy == "partition"
            else "no new task is admitted (429) until Redis is back; running ones finish"
        )
        log.warning(
            "Redis at %s stopped answering (%s): this worker runs degraded on its own memory "
            "until Redis answers again (probed with backoff). Meanwhile: tasks are recorded "
            "here and written back later, reads of other workers' tasks answer 421, and %s "
            "(TASKMON_FALLBACK_POLICY=%s). Check that Redis is up and reachable.",
            self.target, exc, meaning, self.policy,
        )  # fmt: skip
        self._wake.set()

    def wait_promoted(self, timeout: float) -> bool:
        """Block up to `timeout` seconds for the re-promotion; True when healthy."""
        with self._promoted:
            if self._degraded:
                self._promoted.wait(timeout)
            return not self._degraded

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = self._min_backoff_s
        next_check = time.monotonic() + self._healthy_interval_s
        while not self._stop.is_set():
            if self._degraded:
                # Full jitter: anywhere up to the backoff, never less than the minimum.
                self._stop.wait(max(self._min_backoff_s, backoff * self._rng()))
                if self._stop.is_set():
                    return
                if self._try_promote():
                    backoff = self._min_backoff_s
                else:
                    backoff = min(self.max_backoff_s, backoff * 2)
                next_check = time.monotonic() + self._healthy_interval_s
                continue
            wait = next_check - time.monotonic()
            if self._settle_look is not None:
                wait = min(wait, SETTLE_LOOK_S)
            self._wake.wait(max(0.0, wait))
            self._wake.clear()
            if self._degraded or self._stop.is_set():
                continue
            if self._settle_look is not None:
                self._look_back()
            if time.monotonic() >= next_check:
                self._check_healthy()
                next_check = time.monotonic() + self._healthy_interval_s

    def _try_promote(self) -> bool:
        try:
            self._probe()
            with self._checking:
                self._lost_pending = self._store_lost() or self._lost_pending
                lost = self._lost_pending
            written = sum(p.write_back(store_lost=lost) for p in self._participants)
            with self.lock:
                written += sum(p.on_promote(store_lost=lost) for p in self._participants)
                self._open_window()
                window = self._window
                self._degraded = False
                self._lost_pending = False
                self._promoted.notify_all()
                away = time.monotonic() - self._since
        except BackendUnavailable:
            return False
        except BackendRefused as exc:
            _refused("re-promotion", exc, "probing again")
            return False
        except Exception:
            log.exception("re-promotion to Redis at %s failed; probing again", self.target)
            return False
        metrics.DEGRADED.set(0)
        metrics.FAILOVER_SWITCHES.labels("redis").inc()
        held_back = self._on_promoted()
        log.warning(
            "Redis at %s answers again: this worker is back on it after %.1f s degraded; %d "
            "task(s) and permit(s) written back%s; %d repeated warning(s) held back meanwhile",
            self.target, away, written,
            " (Redis had lost its data: every held task was rewritten)" if lost else "",
            held_back,
        )  # fmt: skip
        self._say_back(window, away_s=away, store_lost=lost)
        return True

    def recheck_store(self) -> bool:
        """Look now whether Redis lost its data, and if so write everything back before
        returning (for a caller whose permit Redis no longer knows). True when it had."""
        if self._degraded:
            return False
        return self._check_healthy(refresh=False)

    def _check_healthy(self, *, refresh: bool = True) -> bool:
        with self._checking:
            return self._look(refresh=refresh)

    def _look(self, *, refresh: bool) -> bool:
        lost = False
        try:
            self._lost_pending = self._store_lost() or self._lost_pending
            lost = self._lost_pending
            if lost:
                log.warning(
                    "Redis at %s lost its data (restarted empty, or flushed): writing back "
                    "every task this worker holds and re-registering its permits. Finished "
                    "tasks it finished over a quarter of an hour ago, and those of workers that "
                    "restarted since, survive a restart only with persistence on (appendonly yes).",
                    self.target,
                )
                # Permits first: until they are registered again, other workers can grant them.
                with self.lock:
                    written = sum(p.on_promote(store_lost=True) for p in self._participants)
                    self._open_window()  # its whole length: nothing tells who holds what
                written += sum(p.write_back(store_lost=True) for p in self._participants)
                self._lost_pending = False
                log.warning("wrote back %d task(s) and permit(s) to Redis at %s", written,
                            self.target)  # fmt: skip
            if refresh:
                for participant in self._participants:
                    participant.refresh()
        except BackendUnavailable as exc:
            self.trip(exc)
        except BackendRefused as exc:
            _refused("the health check", exc, "checking again")
        except Exception:
            log.exception("checking Redis at %s failed; checking again", self.target)
        return lost

    # -- the settling window -----------------------------------------------------------------

    def _open_window(self) -> None:
        """Under the lock: a window of its whole length, which no older look may end."""
        self._settled_at = time.monotonic() + self.settle_s
        self._window += 1
        self._settle_look = None

    def _say_back(self, window: int, *, away_s: float, store_lost: bool) -> None:
        """Mark this worker back, and let the window `window` end early if it is still open.

        The outage's start is the mark's Redis time less the time away measured up to the
        flip: never earlier than the trip, so a mark that another worker wrote before the
        outage (and before it degraded again) is never taken for one written after it."""
        if self._announce is None or self._not_back is None:
            return
        try:
            mark = self._announce()
        except BackendUnavailable:
            return  # the others wait their whole window for this worker; so does it
        except BackendRefused as exc:
            _refused("recording the re-promotion", exc, "the settling window runs its length")
            return
        except Exception:
            log.exception("recording the re-promotion at %s failed; the settling window "
                          "runs its length", self.target)  # fmt: skip
            return
        if store_lost or mark < 0:
            return  # the registry was lost with the data: it cannot tell who is back
        with self.lock:
            if self._window == window and not self._degraded:
                self._settle_look = (mark - int(away_s * 1000), mark)

    def _look_back(self) -> None:
        """End the window now if every worker alive when the outage began is back."""
        look = self._settle_look
        if look is None or self._not_back is None:
            return
        if self.settling() <= 0:
            self._drop_look(look)
            return
        try:
            missing = self._not_back(*look)
        except BackendUnavailable as exc:
            self.trip(exc)
            return
        except BackendRefused as exc:
            _refused("reading which workers are back", exc, "the settling window runs its length")
            self._drop_look(look)
            return
        except Exception:
            log.exception("reading which workers are back on Redis at %s failed; the "
                          "settling window runs its length", self.target)  # fmt: skip
            self._drop_look(look)
            return
        if missing < 0:  # this worker's mark is gone: Redis lost its data meanwhile
            self._drop_look(look)
        elif missing == 0:
            with self.lock:
                if self._settle_look == look:
                    self._settle_look = None
                    left = self.settling()
                    self._settled_at = time.monotonic()
                    self._promoted.notify_all()
                    log.info("every worker is back on Redis at %s: admitting through it "
                             "again, %.1f s before the settling window's end", self.target,
                             left)  # fmt: skip

    def _drop_look(self, look: tuple[int, int]) -> None:
        with self.lock:
            if self._settle_look == look:
                self._settle_look = None


def _refused(step: str, exc: BackendRefused, then: str) -> None:
    # The adapter that met the refusal logged it once as an ERROR saying what to grant; a
    # traceback at each probe would bury that line under lines that say nothing more.
    log.debug("%s refused by Redis' ACL (%s); %s", step, exc, then)
