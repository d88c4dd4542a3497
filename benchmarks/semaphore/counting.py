"""CountingSemaphore: a RedisSemaphore that counts runs of its acquire script."""

from __future__ import annotations

from typing import Any

from taskmon.ports import Holder
from taskmon.redis.semaphore import Attempt, RedisSemaphore


class CountingSemaphore(RedisSemaphore):
    """A RedisSemaphore that counts runs of its acquire script (one integer add per run)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.attempts = 0
        super().__init__(*args, **kwargs)

    def do_acquire(self, token: str, holder: Holder, nonce: str = "0") -> Attempt:
        self.attempts += 1
        return super().do_acquire(token, holder, nonce)
