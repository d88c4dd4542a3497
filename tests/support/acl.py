"""The shipped ACL user (deploy/redis/taskmon.acl) made ready for a test Redis, and the
checker that says what Redis refused to it.

Redis records every refusal in its ACL LOG, also those a client swallows, so an empty log after
a run is the proof that the ACL grants everything the run sent. The log lives in memory: read
it before a restart of Redis, and again after.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[2]
ACL_FILE = ROOT / "deploy" / "redis" / "taskmon.acl"
PLACEHOLDER = "REPLACE_WITH_TASKMON_PASSWORD"
USER = "taskmon"
# Refused on purpose, and skipped by taskmon with one line (backends._warn_on_eviction).
EXPECTED_REFUSALS = frozenset({"config|get"})


def acl_rules() -> list[str]:
    """The words of the shipped file's one line, `user` and the name included."""
    lines = [line for line in ACL_FILE.read_text().splitlines() if line.strip()]
    assert len(lines) == 1, f"{ACL_FILE} should hold one user line"
    return lines[0].split()


def granted_commands() -> set[str]:
    """Every command (or `command|subcommand`) the file grants, lower case."""
    return {rule[1:].lower() for rule in acl_rules() if rule.startswith("+")}


def acl_line(password: str, *, prefix: str = "taskmon", without: tuple[str, ...] = ()) -> str:
    """The shipped line with `password` for the placeholder, the patterns of key prefix
    `prefix`, and the `+command` rules named in `without` left out (to prove a test fails)."""
    rules = []
    for rule in acl_rules():
        if rule.startswith("+") and rule[1:].lower() in without:
            continue
        with_password = rule.replace(PLACEHOLDER, password)
        rules.append(re.sub(r"^([~&])\{taskmon\}", rf"\1{{{prefix}}}", with_password))
    missing = set(without) - granted_commands()
    assert not missing, f"the file grants none of {missing}"
    return " ".join(rules)


def acl_refusals(admin: redis.Redis) -> list[dict[str, Any]]:
    """The ACL LOG entries of the taskmon user, beyond the expected CONFIG GET."""
    entries: list[dict[str, Any]] = admin.acl_log()
    return [
        entry
        for entry in entries
        if _text(entry.get("username")) == USER
        and _text(entry.get("object")) not in EXPECTED_REFUSALS
    ]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def describe(refusals: list[dict[str, Any]]) -> list[str]:
    """`reason object (context)` per refusal, for an assertion message."""
    return [
        f"{_text(e.get('reason'))} {_text(e.get('object'))} ({_text(e.get('context'))})"
        for e in refusals
    ]
