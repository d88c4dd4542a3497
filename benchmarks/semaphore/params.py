"""The benchmark's fixed parameters: timings, limits and the names of the measurements."""

from __future__ import annotations

TRIVIAL_SCRIPT = "return 1"
CONTENDED_LIMIT = 2
# Waiters retry this rarely, so a fast grant after a release can only come from the wake-up;
# an acquire slower than SLOW_S means a wake-up was lost and the retry caught it.
RETRY_INTERVAL_S = 5.0
SLOW_S = 1.0
ACQUIRE_TIMEOUT_S = 10.0  # > RETRY_INTERVAL_S: a lost wake-up shows as slow, not as a timeout
START_DELAY_S = 0.1  # between "all ready" and the common start instant
STARTUP_TIMEOUT_S = 60.0  # spawning imports taskmon in every worker, on a busy machine
CALL_TIMEOUT_S = 20.0
IDLE_LIMIT_S = 600.0  # a worker whose parent stays silent this long exits by itself
HANDOFF_SETTLE_S = 0.02  # after the waiter is queued, let it park in its wait
HANDOFF_CHANNEL_WAIT_S = 5.0
PEER_SETTLE_S = 0.05  # a peer's waiter cannot be seen queued: this long to park or poll
FAIR_CLIENTS = 16  # the fairness window: this many clients (processes) ...
FAIR_LIMIT = 4  # ... for this many permits ...
FAIR_HOLD_S = 0.005  # ... each held this long, released, and asked for again at once

EVALSHA_1 = "evalsha_1"
SEM_1 = "sem_1"
EVALSHA_N = "evalsha_n"
SEM_N = "sem_n"
SEM_NC = "sem_nc"
HANDOFF = "handoff"
FAIR = "fair"
MEASUREMENTS = (EVALSHA_1, SEM_1, EVALSHA_N, SEM_N, SEM_NC, HANDOFF, FAIR)
BASELINES = (EVALSHA_1, EVALSHA_N)
LIMIT_ABOVE_1 = (SEM_NC, FAIR)  # mutexes sit these out
