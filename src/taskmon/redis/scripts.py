"""Lua scripts, one per file in lua/, each registered once per client.

redis-py's Script sends EVALSHA and falls back to EVAL (loading the script) when the server
answers NOSCRIPT, e.g. after a restart, so registration survives a Redis restart.

Every script begins with a header in one format, which tests/unit/test_lua_scripts.py checks:

    -- <name>: what it does, in a sentence or a paragraph.
    --
    -- KEYS[1] <Keys attribute>  what the key holds          (or: -- KEYS: none)
    -- ARGV[1] <name>            what the argument is        (or: -- ARGV: none)
    -- ARGV[9..] <name>          the remaining arguments, when the script unpacks them
    -- Returns: what it answers.

Each adapter declares, in one table (`SCRIPT_KEYS` in its module), the scripts it runs and the
Keys attribute behind each of their KEYS, in order: the header names the same attributes.

Functions several scripts share live in lua/lib/<name>.lua, and a script takes them with a
line `--!include <name>` (pasted in place when the script is read: Redis sees one script).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script

ScriptKeys = Mapping[str, tuple[str, ...]]


INCLUDE = "--!include "


@cache
def script_source(name: str) -> str:
    """The text of lua/<name>.lua, its `--!include` lines replaced by lua/lib/<lib>.lua;
    read once per process."""
    folder = resources.files("taskmon.redis").joinpath("lua")
    lines = folder.joinpath(f"{name}.lua").read_text().splitlines(keepends=True)
    return "".join(
        folder.joinpath("lib", f"{line.removeprefix(INCLUDE).strip()}.lua").read_text()
        if line.startswith(INCLUDE)
        else line
        for line in lines
    )


_FAILED_AT = re.compile(r"script: ([0-9a-f]{40}), on @user_script:(\d+)")


@cache
def _scripts_by_sha() -> dict[str, str]:
    folder = resources.files("taskmon.redis").joinpath("lua")
    names = [f.name.removesuffix(".lua") for f in folder.iterdir() if f.name.endswith(".lua")]
    return {hashlib.sha1(script_source(n).encode()).hexdigest(): n for n in names}  # noqa: S324


def failing_line(error: str) -> str | None:
    """`<script> line <n>: <the line>` for a script error's message (Redis names only the
    script's SHA1 and the line), or None when it names no script of ours."""
    found = _FAILED_AT.search(error)
    name = _scripts_by_sha().get(found.group(1)) if found else None
    if found is None or name is None:
        return None
    lines = script_source(name).splitlines()
    number = int(found.group(2))
    text = lines[number - 1].strip() if 0 < number <= len(lines) else "?"
    return f"{name}.lua line {number}: {text}"


class ScriptSet:
    """The scripts of one adapter's key table, registered on its client at construction."""

    def __init__(self, client: redis.Redis, script_keys: ScriptKeys) -> None:
        self._scripts = {name: client.register_script(script_source(name)) for name in script_keys}

    def __getitem__(self, name: str) -> Script:
        return self._scripts[name]
