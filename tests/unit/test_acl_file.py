"""The shipped ACL user, read as text: in the order Redis applies rules, granting every command
the Lua scripts call and no category, key or channel beyond taskmon's own.

The live proof (a whole run as that user, nothing refused) is tests/e2e/test_redis_acl_e2e.py;
this one fails at once when a script starts calling a command the file lacks.
"""

from __future__ import annotations

import re
from importlib import resources

from tests.support.acl import ACL_FILE, PLACEHOLDER, acl_line, acl_rules, granted_commands

# A command in a script: redis.call('ZADD', ...), or a {'ZREM', key} a helper unpacks.
_SCRIPT_COMMAND = re.compile(r"redis\.p?call\(\s*'([A-Za-z]+)'|\{\s*'([A-Z]+)'\s*,")


def script_commands() -> set[str]:
    lua = resources.files("taskmon.redis").joinpath("lua")
    sources = [f.read_text() for f in lua.iterdir() if f.name.endswith(".lua")]
    sources += [f.read_text() for f in lua.joinpath("lib").iterdir() if f.name.endswith(".lua")]
    found = {a or b for text in sources for a, b in _SCRIPT_COMMAND.findall(text)}
    return {name.lower() for name in found}


def test_every_command_a_script_calls_is_granted() -> None:
    commands = script_commands()
    assert {"zadd", "hincrby", "publish", "time", "zrem", "hdel"} <= commands  # the parse works
    assert commands - granted_commands() == set()


def test_the_rules_come_in_the_order_redis_applies_them() -> None:
    rules = acl_rules()
    assert rules[:4] == ["user", "taskmon", "reset", "on"]
    assert rules[4] == f">{PLACEHOLDER}"
    # Each reset comes before the pattern it makes room for: a pattern before it is wiped.
    assert rules.index("resetkeys") < rules.index("~{taskmon}:*")
    assert rules.index("resetchannels") < rules.index("&{taskmon}:*")
    first_grant = min(i for i, rule in enumerate(rules) if rule.startswith("+"))
    assert rules.index("-@all") < first_grant


def test_nothing_beyond_taskmon_is_granted() -> None:
    rules = acl_rules()
    patterns = [rule for rule in rules if rule[0] in "~&%"]
    assert patterns == ["~{taskmon}:*", "&{taskmon}:*"]
    assert not {"allkeys", "allchannels", "allcommands", "nopass", "+@all"} & set(rules)
    assert not [rule for rule in rules if rule.startswith("+@")], "no category"
    too_much = {"eval", "config", "config|get", "keys", "flushall", "flushdb", "info",
                "script", "script|flush", "acl", "debug", "shutdown", "client"}  # fmt: skip
    assert not too_much & granted_commands()


def test_a_test_password_and_prefix_replace_the_placeholders() -> None:
    line = acl_line("pw-1", prefix="tenant-a", without=("zrank",))
    assert PLACEHOLDER not in line
    assert ">pw-1" in line
    assert "~{tenant-a}:* " in line
    assert "&{tenant-a}:* " in line
    assert "+zrank" not in line
    assert "+zrangebyscore" in line


def test_the_guide_quotes_the_file_as_it_is() -> None:
    guide = (ACL_FILE.parent / "README.md").read_text()
    assert " ".join(acl_rules()) in guide
    rows = set(re.findall(r"`\+([a-z|\\]+)`", guide))
    assert {row.replace("\\", "") for row in rows} == granted_commands(), "a row per command"
