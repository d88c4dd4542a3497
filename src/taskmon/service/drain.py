"""Whether the worker admits new tasks: an operator's drain order, as the worker obeys it.

A draining worker refuses every new submission (Draining: 503, Retry-After) and reports not
ready, while what it runs and holds queued goes on to its end. The order itself arrives through
Redis (the registry's heartbeat) or, in memory mode, from the admin request that reached it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class DrainSwitch:
    """One flag, set and read from any thread; each change logged once (WARNING)."""

    def __init__(self, held: Callable[[], int]) -> None:
        self._held = held  # how many tasks the worker holds, for the log line
        self._on = False

    @property
    def on(self) -> bool:
        return self._on

    def set(self, draining: bool) -> bool:
        """Drain (True) or admit again (False). True when this changed the state."""
        if draining == self._on:
            return False
        self._on = draining
        if draining:
            log.warning(
                "draining: admitting no new tasks (POST /api/tts and /readyz answer 503); "
                "finishing the %d task(s) this worker holds",
                self._held(),
            )
        else:
            log.warning("drain cancelled: admitting new tasks again")
        return True
