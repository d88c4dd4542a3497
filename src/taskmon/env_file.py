"""TASKMON_ENV_FILE: settings a gunicorn master applies at start and again at every SIGHUP.

gunicorn's graceful reload (SIGHUP) replaces every worker, but the new workers inherit the
master's environment, which nothing outside the master can change. With TASKMON_ENV_FILE set,
the master reads that file (dotenv syntax: `TASKMON_BACKEND=redis`, `#` comments) when it
starts and before each reload forks the new workers: edit the file, send SIGHUP, and the
workers are replaced with the new settings while the old ones finish what they hold. That is
how a live service moves between memory and Redis mode (docs/operations.md, "Gray release").

Guarantees: the file's values override the master's own environment; a key dropped from the
file falls back to the value the master started with; only TASKMON_ variables are taken.
Failure mode: a file that cannot be read, names another variable, or makes invalid settings is
refused as a whole with an EnvFileError naming the line; at a reload the master then logs it
and keeps the settings it had, so a typo never leaves a host without workers.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, MutableMapping
from pathlib import Path

from dotenv import dotenv_values

from taskmon.config import ENV_PREFIX, ConfigError

ENV_FILE_VARIABLE = "TASKMON_ENV_FILE"


class EnvFileError(ValueError):
    """The settings file cannot be applied; nothing of it was."""


def read_env_file(path: Path) -> dict[str, str]:
    """The TASKMON_ variables the file sets. Raises EnvFileError for anything else in it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EnvFileError(f"{ENV_FILE_VARIABLE}={path}: cannot be read ({exc})") from None
    # Parsing (quotes, escapes, inline comments, multi-line values) is python-dotenv's, with no
    # expansion of ${...}: a value means what it says, whatever the master's environment holds.
    parsed = dotenv_values(stream=io.StringIO(text), interpolate=False)
    values: dict[str, str] = {}
    for key, value in parsed.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_FILE_VARIABLE:
            raise EnvFileError(
                f"{path}: {key!r} is not a taskmon setting; the file takes {ENV_PREFIX}* "
                f"variables only (and not {ENV_FILE_VARIABLE} itself)"
            )
        if value is None:
            raise EnvFileError(f"{path}: {key!r} has no value (write {key}=...)")
        values[key] = value
    return values


class EnvFile:
    """The file named by TASKMON_ENV_FILE, applied onto one process environment."""

    def __init__(self, path: Path, environ: MutableMapping[str, str] | None = None) -> None:
        self.path = path
        self.environ: MutableMapping[str, str] = os.environ if environ is None else environ
        self._base = dict(self.environ)  # what the master started with, before any file
        self.applied: dict[str, str] = {}

    def apply(self, validate: Callable[[], object]) -> dict[str, str]:
        """Apply the file, then `validate()` (which raises ConfigError for bad settings).

        Returns what changed (variable -> new value, "" for one unset). On any error the
        environment is left exactly as it was and EnvFileError is raised.
        """
        wanted = read_env_file(self.path)
        before = {key: self.environ.get(key) for key in {*self.applied, *wanted}}
        for key in self.applied.keys() - wanted.keys():
            self._restore(key)
        self.environ.update(wanted)
        try:
            validate()
        except ConfigError as exc:
            for key, value in before.items():
                if value is None:
                    self.environ.pop(key, None)
                else:
                    self.environ[key] = value
            raise EnvFileError(f"{self.path}: {exc}") from None
        self.applied = wanted
        return {
            key: self.environ.get(key, "")
            for key, value in before.items()
            if self.environ.get(key) != value
        }

    def _restore(self, key: str) -> None:
        if key in self._base:
            self.environ[key] = self._base[key]
        else:
            self.environ.pop(key, None)


def env_file_from_environment() -> EnvFile | None:
    path = os.environ.get(ENV_FILE_VARIABLE)
    return EnvFile(Path(path)) if path else None
