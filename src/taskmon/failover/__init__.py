"""Run-time failover: Redis while it answers, this worker's own memory while it does not.

`Failover` (switch.py) decides which way calls go and brings the worker back; the adapters
(monitor.py, semaphore.py) implement the ports over both; share.py is the partition policy's
arithmetic and quiet.py keeps the log bounded per outage. taskmon.runtime wires them.
"""

from taskmon.failover.monitor import FailoverTaskMonitor
from taskmon.failover.quiet import OutageLogFilter
from taskmon.failover.semaphore import FailoverSemaphore, ShareInputs
from taskmon.failover.share import fallback_share, rank_of
from taskmon.failover.switch import Failover

__all__ = [
    "Failover",
    "FailoverSemaphore",
    "FailoverTaskMonitor",
    "OutageLogFilter",
    "ShareInputs",
    "fallback_share",
    "rank_of",
]
