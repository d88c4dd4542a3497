"""Sessions: `tests` (default, the full suite), `loadtest`, `rehearsal`, `chaos`, `fast`, `lint`,
`smoke`, `bench`, `mutation`."""

from __future__ import annotations

import re
import shutil
from collections import Counter

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "venv"
nox.options.download_python = "never"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHON = "3.11"
LINTED = ("src", "tests", "loadtests", "chaos", "benchmarks", "noxfile.py")


def _install(session: nox.Session, *groups: str) -> None:
    requirements = [
        req for group in groups for req in nox.project.dependency_groups(PYPROJECT, group)
    ]
    session.install("-e", ".", *requirements)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run every test: unit, contract, integration, stateful, e2e (real Redis and gunicorn)."""
    _install(session, "test")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def loadtest(session: nox.Session) -> None:
    """Put a real stack under Locust load and judge the invariants (`-- --help` for options)."""
    _install(session, "load")
    # On Ctrl-C the runner stops Locust, gunicorn and Redis (process groups of their own):
    # nox must wait for that instead of killing it after its default fraction of a second.
    session.run(
        "python", "-m", "loadtests", *session.posargs, interrupt_timeout=60, terminate_timeout=30
    )


@nox.session(python=PYTHON)
def rehearsal(session: nox.Session) -> None:
    """Rehearse a gray release under load: two hosts from memory to Redis mode and back."""
    _install(session, "load")
    session.run(
        "python", "-m", "loadtests.rehearsal", *session.posargs,
        interrupt_timeout=90, terminate_timeout=30,
    )  # fmt: skip


@nox.session(python=PYTHON)
def chaos(session: nox.Session) -> None:
    """Cut Redis, its network and workers under load; judge every scenario (`-- --help`)."""
    _install(session, "load", "chaos")
    session.run(
        "python", "-m", "chaos", *session.posargs, interrupt_timeout=90, terminate_timeout=30
    )


@nox.session(python=PYTHON)
def fast(session: nox.Session) -> None:
    """Run the quick loop while editing: unit tests and both ports' contracts (about 30 s)."""
    _install(session, "test")
    session.run("pytest", "tests/unit", "tests/contract", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Check formatting, lint, and strict typing of the code and its tests."""
    _install(session, "dev")
    session.run("ruff", "format", "--check", *LINTED)
    session.run("ruff", "check", *LINTED)
    session.run("mypy")


@nox.session(python=PYTHON)
def smoke(session: nox.Session) -> None:
    """Start `taskmon serve --workers 4` (memory, then Redis) and use it as a client would."""
    _install(session)
    session.run("python", "-m", "taskmon.harness.smoke", "--workers", "4")
    session.run("python", "-m", "taskmon.harness.smoke", "--workers", "4", "--redis")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Measure taskmon against its peers and the raw round trip, side by side (`-- --quick`)."""
    _install(session, "bench", "load", "chaos")  # the failover suite runs the chaos harness
    session.run(
        "python", "-m", "benchmarks", *session.posargs, interrupt_timeout=90, terminate_timeout=30
    )


@nox.session(python=PYTHON)
def mutation(session: nox.Session) -> None:
    """Mutation-test the domain, the ledger, the service and the memory adapters (a report)."""
    _install(session, "mutation")
    # A fresh run every time: mutmut keeps a verdict until the mutated function changes, so
    # a mutant that survived stays "survived" after a test that kills it is added.
    shutil.rmtree("mutants", ignore_errors=True)
    session.run("mutmut", "run", *session.posargs)  # fails on mutmut's errors, not on survivors
    session.run("mutmut", "results")  # every mutant not killed, for `mutmut show <name>`
    everything = session.run("mutmut", "results", "--all", "true", silent=True)
    assert isinstance(everything, str)
    for line in _mutation_scores(everything):
        session.log(line)


def _mutation_scores(results: str) -> list[str]:
    """Killed / total per module, from `mutmut results --all true` (`<mutant>: <status>`)."""
    by_module: dict[str, Counter[str]] = {}
    for line in results.splitlines():
        name, colon, status = line.strip().rpartition(": ")
        if colon and "__mutmut_" in name:
            module = re.split(r"\.x[_\u01c1]", name, maxsplit=1)[0]  # names are module.x_f...
            by_module.setdefault(module, Counter())[status] += 1
    lines = []
    for module, statuses in sorted(by_module.items()):
        total, killed = statuses.total(), statuses["killed"]
        rest = ", ".join(
            f"{n} {status}" for status, n in sorted(statuses.items()) if status != "killed"
        )
        lines.append(
            f"{module}: {killed}/{total} killed ({killed / total:.1%}){'; ' + rest if rest else ''}"
        )
    return lines
