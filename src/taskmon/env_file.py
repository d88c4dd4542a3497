"""TASKMON_ENV_FILE: settings a gunicorn master applies at start and again at every SIGHUP.

gunicorn's graceful reload (SIGHUP) replaces every worker, but the new workers inherit the
master's environment, which nothing outside the master can change. With TASKMON_ENV_FILE set,
the master reads that file (dotenv syntax: `TASKMON_BACKEND=redis`, `#` comments, quotes,
`export`) when it starts and before each reload forks the new workers: edit the file, send
SIGHUP, and the workers are replaced with the new settings while the old ones finish what they
hold. That is how a live service moves between memory and Redis mode (docs/deployment.md,
"Gray release").

Guarantees: the file's values override the master's own environment; a key dropped from the
file falls back to the value the master started with; only taskmon's own variables are taken.
Failure mode: a file that cannot be read or parsed, repeats a key, names a variable taskmon
does not read, changes one only read at start, or makes invalid settings is refused as a whole
with an EnvFileError naming the line or the variable; the environment is then left exactly as
it was. At a reload the master logs the refusal and keeps the settings it had, so a typo never
leaves a host without workers.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path

from dotenv.parser import parse_stream

from taskmon.config import ENV_PREFIX, ConfigError, Settings

ENV_FILE_VARIABLE = "TASKMON_ENV_FILE"
# Read by the gunicorn config when the master starts, never again: a reload cannot change them.
START_ONLY = frozenset(
    {
        "TASKMON_BIND",
        "TASKMON_THREADS",
        "TASKMON_LOG_LEVEL",
        "TASKMON_ACCESS_LOG",
        "TASKMON_CONTROL_SOCKET",
    }
)
SECRETS = frozenset({"TASKMON_REDIS_URL", "TASKMON_ADMIN_TOKEN"})
# Set for each worker by the gunicorn config, after fork: a file value would be overwritten.
_PER_WORKER = frozenset({"TASKMON_WORKER_INDEX"})


class EnvFileError(ConfigError):
    """The settings file cannot be applied; nothing of it was."""


def file_variables() -> frozenset[str]:
    """The variables a settings file may set: every setting, and the start-only ones."""
    settings = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    return frozenset((settings | START_ONLY) - _PER_WORKER)


def read_env_file(path: Path) -> dict[str, str]:
    """The variables the file sets. Raises EnvFileError for anything it cannot take."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EnvFileError(f"{ENV_FILE_VARIABLE}={path}: cannot be read ({exc})") from None
    allowed = file_variables()
    values: dict[str, str] = {}
    # python-dotenv's own parser (quotes, escapes, `export`, multi-line values), used directly:
    # its dotenv_values() skips a line it cannot parse with a warning, and a skipped line would
    # quietly fall back to the start value. No ${...} expansion: a value means what it says.
    for binding in parse_stream(io.StringIO(text)):
        where = f"{path}:{binding.original.line}"
        if binding.error:
            raise EnvFileError(f"{where}: cannot parse {binding.original.string.strip()!r}")
        key, value = binding.key, binding.value
        if key is None:
            continue  # a blank line or a comment
        if key not in allowed:
            raise EnvFileError(
                f"{where}: {key!r} is not a variable taskmon reads from this file (a typo? "
                f"{ENV_FILE_VARIABLE} and TASKMON_WORKER_INDEX are never taken from it)"
            )
        if value is None:
            raise EnvFileError(f"{where}: {key} has no value (write {key}=...)")
        if "\0" in value:
            raise EnvFileError(f"{where}: the value of {key} holds a NUL character")
        if key in values:
            raise EnvFileError(f"{where}: {key} is set twice")
        values[key] = value
    return values


class EnvFile:
    """The file named by TASKMON_ENV_FILE, applied onto one process environment."""

    def __init__(self, path: Path, environ: MutableMapping[str, str] | None = None) -> None:
        self.path = path
        self.environ: MutableMapping[str, str] = os.environ if environ is None else environ
        self._base = dict(self.environ)  # what the master started with, before any file
        self.applied: dict[str, str] = {}

    def apply(
        self,
        validate: Callable[[], object],
        *,
        reloading: bool = False,
        fixed: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """Apply the file, then `validate()` (which raises ValueError for bad settings).

        `reloading`: refuse to change a START_ONLY variable. `fixed`: variables something
        else re-applies in every worker after fork (gunicorn's `-e`), which the file must not
        set since it could not win. Returns what changed (variable -> new value, "" for one
        unset). On any error the environment is left as it was and EnvFileError is raised.
        """
        wanted = read_env_file(self.path)
        before = {key: self.environ.get(key) for key in {*self.applied, *wanted}}
        after = {key: wanted.get(key, self._base.get(key)) for key in before}
        if reloading:
            frozen = sorted(k for k in START_ONLY & after.keys() if after[k] != before[k])
            if frozen:
                raise EnvFileError(
                    f"{self.path}: {', '.join(frozen)} is read when the master starts only; "
                    "restart it to change that, or put the old value back"
                )
        clash = sorted(set(wanted) & set(fixed or {}))
        if clash:
            raise EnvFileError(
                f"{self.path}: {', '.join(clash)} is also set by gunicorn's -e/raw_env, which "
                "every worker applies after fork, over the file: set it in one place"
            )
        try:
            for key, value in after.items():
                if value is None:
                    self.environ.pop(key, None)
                else:
                    self.environ[key] = value
            validate()
        except ValueError as exc:  # ConfigError, or a value the OS refuses
            self._put_back(before)
            raise EnvFileError(f"{self.path}: {exc}") from None
        except BaseException:
            self._put_back(before)
            raise
        self.applied = wanted
        return {key: after[key] or "" for key in before if after[key] != before[key]}

    def restore_into(self, environ: MutableMapping[str, str]) -> None:
        """Put back, in `environ`, what the master started with for every variable a file may
        set (not only those of the latest file: gunicorn's env_orig is copied at a reload
        before the file is applied, so it can hold an earlier file's values): the environment
        a re-executed master (USR2) must start from."""
        for key in file_variables() | self.applied.keys():
            if key in self._base:
                environ[key] = self._base[key]
            else:
                environ.pop(key, None)

    def _put_back(self, before: Mapping[str, str | None]) -> None:
        for key, value in before.items():
            if value is None:
                self.environ.pop(key, None)
            else:
                self.environ[key] = value


def shown(changed: Mapping[str, str]) -> dict[str, str]:
    """`changed` as a log line may show it: secrets hidden."""
    return {key: "<hidden>" if key in SECRETS else value for key, value in changed.items()}


def env_file_from_environment() -> EnvFile | None:
    path = os.environ.get(ENV_FILE_VARIABLE)
    return EnvFile(Path(path)) if path else None
