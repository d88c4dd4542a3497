"""Sessions: `tests` (default), `lint`, `smoke` (taskmon serve), `bench` (semaphore ratios)."""

from __future__ import annotations

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "venv"
nox.options.download_python = "never"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHON = "3.11"


def _install(session: nox.Session, *groups: str) -> None:
    requirements = [
        req for group in groups for req in nox.project.dependency_groups(PYPROJECT, group)
    ]
    session.install("-e", ".", *requirements)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run unit and end-to-end tests (real espeak-ng, real gunicorn processes)."""
    _install(session, "test")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Check formatting, lint and strict typing."""
    _install(session, "dev")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
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
