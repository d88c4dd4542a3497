"""Lua scripts, one per file in lua/, each registered once per client.

redis-py's Script sends EVALSHA and falls back to EVAL (loading the script) when the server
answers NOSCRIPT, e.g. after a restart, so registration survives a Redis restart.
Every script begins with a header stating its KEYS, ARGV and return value.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script


@cache
def script_source(name: str) -> str:
    """The text of lua/<name>.lua, read once per process."""
    return resources.files("taskmon.redis").joinpath("lua", f"{name}.lua").read_text()


class ScriptSet:
    """The scripts one adapter uses, registered on its client at construction."""

    def __init__(self, client: redis.Redis, *names: str) -> None:
        self._scripts = {name: client.register_script(script_source(name)) for name in names}

    def __getitem__(self, name: str) -> Script:
        return self._scripts[name]
