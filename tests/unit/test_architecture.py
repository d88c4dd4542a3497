"""The layers of src/taskmon, read from its imports: no circle, and every arrow points down.

    web -> service -> ports <- adapters (memory, redis);  runtime wires them;  app fronts it

Every import counts, wherever it stands (module level, TYPE_CHECKING, inside a function): a
dependency hidden in a function is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

import taskmon

SRC = Path(taskmon.__file__).parent
PACKAGE = "taskmon"

# What each part may import from taskmon (besides itself); anything not listed is refused.
# The order reads from the bottom of the house up.
ALLOWED: dict[str, set[str]] = {
    "taskmon.domain": set(),
    "taskmon.config": set(),
    "taskmon.env_file": {"taskmon.config"},
    "taskmon.metrics": set(),
    # The global figures' collector: reads a FigureSource port, knows no adapter.
    "taskmon.global_metrics": {"taskmon.ports", "taskmon.domain"},
    "taskmon.ports": {"taskmon.domain"},
    "taskmon.subscription": {"taskmon.domain"},
    "taskmon.journal": set(),
    # What a worker publishes of itself: shared by the registry, the runtime and the web layer.
    "taskmon.worker_state": set(),
    "taskmon.results": {"taskmon.domain"},
    "taskmon.engines": {"taskmon.config", "taskmon.domain"},
    "taskmon.memory": {"taskmon.domain", "taskmon.ports", "taskmon.subscription"},
    "taskmon.redis": {
        "taskmon.domain",
        "taskmon.ports",
        "taskmon.config",
        "taskmon.subscription",
        "taskmon.worker_state",
    },
    # Composes both adapters behind the ports; the service never sees it.
    "taskmon.failover": {
        "taskmon.domain",
        "taskmon.ports",
        "taskmon.subscription",
        "taskmon.memory",
        "taskmon.redis",
        "taskmon.metrics",
    },
    "taskmon.service": {
        "taskmon.domain",
        "taskmon.ports",
        "taskmon.engines",
        "taskmon.journal",
        "taskmon.results",
        "taskmon.metrics",
    },
    "taskmon.backends": {
        "taskmon.config",
        "taskmon.domain",
        "taskmon.failover",
        "taskmon.global_metrics",
        "taskmon.memory",
        "taskmon.metrics",
        "taskmon.ports",
        "taskmon.redis",
    },
    "taskmon.runtime": {
        "taskmon.backends",
        "taskmon.config",
        "taskmon.domain",
        "taskmon.engines",
        "taskmon.failover",
        "taskmon.global_metrics",
        "taskmon.journal",
        "taskmon.memory",
        "taskmon.metrics",
        "taskmon.ports",
        "taskmon.redis",
        "taskmon.results",
        "taskmon.service",
        "taskmon.worker_state",
    },
    "taskmon.web": {
        "taskmon",  # the package's version, for /openapi.json
        "taskmon.domain",
        "taskmon.ports",
        "taskmon.service",
        "taskmon.runtime",
        "taskmon.metrics",
        "taskmon.worker_state",
    },
    "taskmon.app": {"taskmon.config", "taskmon.runtime", "taskmon.web"},
    "taskmon.wsgi": {"taskmon.app"},
    "taskmon.gunicorn_conf": {"taskmon.config", "taskmon.env_file", "taskmon.web"},
    "taskmon.cli": {"taskmon", "taskmon.config", "taskmon.env_file", "taskmon.faultproxy"},
    # A stand-alone tool (`taskmon fault-proxy`): it knows nothing of the service.
    "taskmon.faultproxy": set(),
    "taskmon.harness": {"taskmon.config", "taskmon.domain", "taskmon.journal"},
}


# Where a part may take only some names of a module it may import: the web layer needs the
# Runtime's type, not the adapters and wiring that runtime.py imports to build it.
ONLY_NAMES: dict[tuple[str, str], set[str]] = {
    ("taskmon.web", "taskmon.runtime"): {"Runtime"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(SRC.rglob("*.py"))}


def imports_of(name: str) -> Iterator[tuple[str, str | None]]:
    """Every (taskmon module, name taken from it or None) that module `name` imports."""
    path = modules()[name]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets: list[tuple[str, str | None]] = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{name}: absolute imports only"
            base = node.module or ""
            # `from a import b` imports module a.b when there is one, else the name b of a.
            targets = [
                (f"{base}.{a.name}", None) if f"{base}.{a.name}" in modules() else (base, a.name)
                for a in node.names
            ]
        else:
            continue
        for target in targets:
            if target[0] == PACKAGE or target[0].startswith(PACKAGE + "."):
                yield target


def imported(name: str) -> Iterator[str]:
    """Every taskmon module that `name` imports, as a module (never a name inside one)."""
    for target, _ in imports_of(name):
        yield target


def part_of(name: str) -> str:
    """The layer a module belongs to: its top-level module or package under taskmon."""
    return ".".join(name.split(".")[:2])


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name in modules():
        edges[name] = set(imported(name)) - {name}
    return edges


def test_every_module_belongs_to_a_known_part() -> None:
    unknown = sorted({part_of(n) for n in modules()} - set(ALLOWED) - {PACKAGE})
    assert not unknown, f"add {unknown} to ALLOWED with the parts it may import"


def test_no_import_circle_in_src() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                circle = [*path[path.index(nxt) :], nxt]
                pytest.fail("import circle: " + " -> ".join(circle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


@pytest.mark.parametrize("name", sorted(modules()))
def test_each_module_imports_only_what_its_layer_may(name: str) -> None:
    part = part_of(name)
    if part == PACKAGE:
        return  # taskmon/__init__.py: the version, nothing else
    refused = sorted(
        target
        for target in imported(name)
        if part_of(target) != part and part_of(target) not in ALLOWED[part]
    )
    assert not refused, f"{name} may not import {refused} (see ALLOWED)"


@pytest.mark.parametrize("name", sorted(modules()))
def test_where_a_layer_may_take_only_some_names_it_takes_no_other(name: str) -> None:
    for target, taken in imports_of(name):
        allowed = ONLY_NAMES.get((part_of(name), part_of(target)))
        if allowed is not None:
            assert taken in allowed, f"{name} takes {taken or 'the module'} from {target}"


def test_the_service_parts_are_private_to_the_service() -> None:
    private = {n for n in modules() if n.startswith("taskmon.service.")}
    for name in modules():
        if part_of(name) == "taskmon.service":
            continue
        reached = sorted(set(imported(name)) & private)
        assert not reached, f"{name} imports {reached}: go through taskmon.service"


def test_production_code_never_imports_the_harness() -> None:
    for name in modules():
        if part_of(name) != "taskmon.harness":
            harness = [t for t in imported(name) if part_of(t) == "taskmon.harness"]
            assert not harness, f"{name} imports {harness}"
