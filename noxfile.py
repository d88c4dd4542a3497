"""Sessions: `tests` (default, the full suite), `fast`, `lint`, `smoke`, `bench`, `mutation`."""

from __future__ import annotations

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "venv"
nox.options.download_python = "never"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHON = "3.11"
LINTED = ("src", "tests", "benchmarks", "noxfile.py")


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
    """Measure the Redis semaphore as ratios to raw EVALSHA round trips, side by side."""
    _install(session)
    session.run("python", "-m", "benchmarks.semaphore", *session.posargs)
