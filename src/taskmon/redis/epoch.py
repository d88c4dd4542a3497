"""Whether Redis still has the data this worker last saw: one random id per dataset.

The first worker to look sets `keys.epoch` (SET NX) and every worker remembers what it read. A
Redis restarted without persistence, or flushed, comes back without the key: the next look sets
a new id, and every worker then sees it changed and writes back what it holds. A restart that
kept its data (AOF, RDB) keeps the id, so nothing is rewritten for nothing.
"""

from __future__ import annotations

import uuid
from typing import cast

import redis

from taskmon.redis.errors import unavailable_as
from taskmon.redis.keys import Keys


class EpochWatch:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client = client
        self._key = keys.epoch
        self._seen: str | None = None

    @property
    def seen(self) -> str | None:
        """The dataset id read at the last look (None before the first)."""
        return self._seen

    def changed(self) -> bool:
        """True when the dataset is not the one seen at the last call (never on the first).

        Raises BackendUnavailable when Redis does not answer.
        """
        with unavailable_as("reading the dataset epoch"):
            pipe = self._client.pipeline(transaction=False)
            pipe.set(self._key, uuid.uuid4().hex, nx=True)
            pipe.get(self._key)
            current = cast("str", pipe.execute()[1])
        before, self._seen = self._seen, current
        return before is not None and before != current
