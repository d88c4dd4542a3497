"""Every Lua script's header states its contract in one format (see taskmon/redis/scripts.py),
and every adapter's key table names the same KEYS as the header, in the same order."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from taskmon.redis.figures import SCRIPT_KEYS as FIGURES_SCRIPTS
from taskmon.redis.keys import Keys
from taskmon.redis.monitor import SCRIPT_KEYS as MONITOR_SCRIPTS
from taskmon.redis.scripts import INCLUDE, ScriptKeys, script_source
from taskmon.redis.semaphore import SCRIPT_KEYS as SEMAPHORE_SCRIPTS
from taskmon.redis.workers import SCRIPT_KEYS as WORKERS_SCRIPTS

ADAPTER_TABLES: dict[str, ScriptKeys] = {
    "monitor": MONITOR_SCRIPTS,
    "semaphore": SEMAPHORE_SCRIPTS,
    "workers": WORKERS_SCRIPTS,
    "figures": FIGURES_SCRIPTS,
}
_ENTRY = re.compile(r"^-- (KEYS|ARGV)\[(\d+)(\.\.)?\] (\w+)(\s{2,}\S.*)?$")
_USED = re.compile(r"\b(KEYS|ARGV)\[(\d+)\]")
_UNPACKED = re.compile(r"unpack\(ARGV, (\d+)\)")


def lua_names() -> list[str]:
    folder = resources.files("taskmon.redis").joinpath("lua")
    return sorted(p.name.removesuffix(".lua") for p in folder.iterdir() if p.name.endswith(".lua"))


def read(name: str) -> tuple[list[str], list[str]]:
    """The header's lines and the code's lines (comments stripped) of lua/<name>.lua."""
    lines = resources.files("taskmon.redis").joinpath("lua", f"{name}.lua").read_text().splitlines()
    length = next((i for i, line in enumerate(lines) if not line.startswith("--")), len(lines))
    code = [line.split("--", 1)[0].rstrip() for line in lines[length:]]
    return lines[:length], [line for line in code if line.strip()]


def table_of(name: str) -> tuple[str, ...]:
    owners = [table[name] for table in ADAPTER_TABLES.values() if name in table]
    assert len(owners) == 1, f"{name} must be in exactly one adapter's SCRIPT_KEYS"
    return owners[0]


def test_every_script_file_belongs_to_one_adapter_and_every_table_entry_has_a_file() -> None:
    tabled = [name for table in ADAPTER_TABLES.values() for name in table]
    assert sorted(tabled) == lua_names()


@pytest.mark.parametrize("name", lua_names())
def test_the_header_names_the_script_and_says_what_it_returns(name: str) -> None:
    header, _ = read(name)
    assert header, f"{name}.lua has no header"
    assert header[0].startswith(f"-- {name}: "), "the first line names the script, then a colon"
    returns = [line for line in header if re.match(r"^-- returns\b", line, re.IGNORECASE)]
    assert len(returns) == 1, f"{name}.lua: one Returns line"
    assert returns[0].startswith("-- Returns: "), f"{name}.lua: 'Returns:' with a capital and colon"


@pytest.mark.parametrize("name", lua_names())
def test_every_key_and_argument_used_is_named_in_the_header_and_no_other(name: str) -> None:
    header, code = read(name)
    body = "\n".join(code)
    documented: dict[str, dict[int, str]] = {"KEYS": {}, "ARGV": {}}
    rest: dict[str, int] = {}
    for line in header:
        if re.match(r"^-- (KEYS|ARGV)\[", line):
            entry = _ENTRY.match(line)
            assert entry, f"{name}.lua: {line!r} is not '-- KEYS[i] name  what it is'"
            kind, index, open_ended, word = entry[1], int(entry[2]), entry[3], entry[4]
            assert index not in documented[kind], f"{name}.lua: {kind}[{index}] twice"
            documented[kind][index] = word
            if open_ended:
                rest[kind] = index
    for kind in ("KEYS", "ARGV"):
        if not documented[kind]:
            assert f"-- {kind}: none" in header, (
                f"{name}.lua: no {kind} lines and no '{kind}: none'"
            )
        indexes = sorted(documented[kind])
        assert indexes == list(range(1, len(indexes) + 1)), f"{name}.lua: {kind} not 1..n"
    used = {kind: {int(i) for k, i in _USED.findall(body) if k == kind} for kind in documented}
    unpacked = {int(i) for i in _UNPACKED.findall(body)}
    assert unpacked == ({rest["ARGV"]} if "ARGV" in rest else set()), (
        f"{name}.lua: 'ARGV[n..]' documents exactly the unpack(ARGV, n) it does"
    )
    for kind in ("KEYS", "ARGV"):
        named = set(documented[kind]) - ({rest[kind]} if kind in rest else set())
        assert used[kind] == named, f"{name}.lua: {kind} used {used[kind]}, documented {named}"


@pytest.mark.parametrize("name", lua_names())
def test_keys_argv_and_returns_form_one_block_that_ends_the_header(name: str) -> None:
    header, _ = read(name)
    first = next(i for i, line in enumerate(header) if re.match(r"^-- (KEYS|ARGV)[\[:]", line))
    assert header[first - 1] == "--", f"{name}.lua: one blank comment line before KEYS"
    block = header[first:]
    returns = next(i for i, line in enumerate(block) if line.startswith("-- Returns: "))
    for line in block[:returns]:
        entry = _ENTRY.match(line) or re.match(r"^-- (KEYS|ARGV): none$", line)
        continuation = re.match(r"^--\s{3,}\S", line)
        assert entry or continuation, f"{name}.lua: {line!r} breaks the KEYS/ARGV block"
    for line in block[returns + 1 :]:
        assert re.match(r"^--\s{3,}\S", line), f"{name}.lua: {line!r} after Returns"


@pytest.mark.parametrize("name", lua_names())
def test_the_header_keys_are_the_adapter_table_and_attributes_of_keys(name: str) -> None:
    header, _ = read(name)
    keys = [m[4] for m in map(_ENTRY.match, header) if m is not None and m[1] == "KEYS"]
    assert tuple(keys) == table_of(name), f"{name}.lua: header KEYS vs the adapter's SCRIPT_KEYS"
    assert all(hasattr(Keys, key) for key in keys), "each is a Keys attribute (keys.py builds it)"


@pytest.mark.parametrize("name", lua_names())
def test_scripts_never_build_key_names(name: str) -> None:
    # Every key comes in KEYS (so Cluster can route the script); a name glued together in Lua
    # would hide a key from the caller and from keys.py.
    _, code = read(name)
    glued = [
        r"(KEYS|ARGV)\[\d+\]\s*\.\.",  # a key or an argument, then `..`
        r"\.\.\s*(KEYS|ARGV)\[",  # `..`, then a key or an argument
        r"['\"][^'\"]*[:{}][^'\"]*['\"]\s*\.\.",  # a piece of a key name, then `..`
        r"\.\.\s*['\"][^'\"]*[:{}]",  # `..`, then a piece of a key name
    ]
    for line in code:
        for pattern in glued:
            assert not re.search(pattern, line), f"{name}.lua glues a name together: {line}"


@pytest.mark.parametrize("name", lua_names())
def test_one_indentation_style(name: str) -> None:
    text = resources.files("taskmon.redis").joinpath("lua", f"{name}.lua").read_text()
    for number, line in enumerate(text.splitlines(), 1):
        indent = len(line) - len(line.lstrip(" "))
        assert "\t" not in line, f"{name}.lua:{number}: a tab"
        assert indent % 4 == 0, f"{name}.lua:{number}: indent by four spaces"
        assert line == line.rstrip(), f"{name}.lua:{number}: trailing white space"


def library_names() -> list[str]:
    folder = resources.files("taskmon.redis").joinpath("lua", "lib")
    return sorted(p.name.removesuffix(".lua") for p in folder.iterdir() if p.name.endswith(".lua"))


@pytest.mark.parametrize("name", lua_names())
def test_every_include_names_a_library_and_is_pasted_in(name: str) -> None:
    text = resources.files("taskmon.redis").joinpath("lua", f"{name}.lua").read_text()
    included = [line.removeprefix(INCLUDE).strip() for line in text.splitlines()
                if line.startswith(INCLUDE)]  # fmt: skip
    assert set(included) <= set(library_names()), f"{name}.lua includes {included}"
    source = script_source(name)
    assert not [line for line in source.splitlines() if line.startswith(INCLUDE)], "replaced"
    for library in included:
        assert f"-- {library}: " in source, f"{library} pasted into {name}"


@pytest.mark.parametrize("name", library_names())
def test_a_library_has_a_header_and_the_one_indentation_style(name: str) -> None:
    text = resources.files("taskmon.redis").joinpath("lua", "lib", f"{name}.lua").read_text()
    assert text.startswith(f"-- {name}: "), "the first line names the library"
    for number, line in enumerate(text.splitlines(), 1):
        assert "\t" not in line, f"lib/{name}.lua:{number}: a tab"
        assert (len(line) - len(line.lstrip(" "))) % 4 == 0, f"lib/{name}.lua:{number}: indent"
        assert line == line.rstrip(), f"lib/{name}.lua:{number}: trailing white space"
