"""TASKMON_ENV_FILE: what the master applies, what it refuses, and what a refusal leaves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taskmon.config import ConfigError, load_settings
from taskmon.env_file import EnvFile, EnvFileError, read_env_file


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_taskmon_variables_with_comments_quotes_and_no_expansion(tmp_path: Path) -> None:
    path = write(
        tmp_path / "taskmon.env",
        "# gray release\n\nTASKMON_BACKEND=redis\nexport TASKMON_CONCURRENCY_LIMIT=6\n"
        "TASKMON_KEY_PREFIX='canary'  # inline comment\nTASKMON_ADMIN_TOKEN=${HOME}\n",
    )
    assert read_env_file(path) == {
        "TASKMON_BACKEND": "redis",
        "TASKMON_CONCURRENCY_LIMIT": "6",
        "TASKMON_KEY_PREFIX": "canary",
        "TASKMON_ADMIN_TOKEN": "${HOME}",
    }


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("PATH=/tmp\n", "'PATH' is not a taskmon setting"),
        ("TASKMON_ENV_FILE=/other\n", "'TASKMON_ENV_FILE' is not a taskmon setting"),
        ("TASKMON_BACKEND\n", "'TASKMON_BACKEND' has no value"),
    ],
)
def test_refuses_what_is_not_a_taskmon_setting(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(EnvFileError, match=named):
        read_env_file(write(tmp_path / "taskmon.env", text))


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(EnvFileError, match="cannot be read"):
        read_env_file(tmp_path / "missing.env")


def test_the_file_overrides_and_a_dropped_key_falls_back_to_the_start(tmp_path: Path) -> None:
    environ = {"TASKMON_BACKEND": "memory", "OTHER": "kept"}
    path = write(tmp_path / "taskmon.env", "TASKMON_BACKEND=auto\nTASKMON_CONCURRENCY_LIMIT=3\n")
    env_file = EnvFile(path, environ)
    changed = env_file.apply(lambda: None)
    assert changed == {"TASKMON_BACKEND": "auto", "TASKMON_CONCURRENCY_LIMIT": "3"}
    assert environ == {**environ, "TASKMON_BACKEND": "auto", "TASKMON_CONCURRENCY_LIMIT": "3"}

    write(path, "TASKMON_CONCURRENCY_LIMIT=3\n")
    changed = env_file.apply(lambda: None)
    assert changed == {"TASKMON_BACKEND": "memory"}  # back to what the master started with
    assert environ == {
        "TASKMON_BACKEND": "memory",
        "OTHER": "kept",
        "TASKMON_CONCURRENCY_LIMIT": "3",
    }

    write(path, "")
    assert env_file.apply(lambda: None) == {"TASKMON_CONCURRENCY_LIMIT": ""}
    assert environ == {"TASKMON_BACKEND": "memory", "OTHER": "kept"}


def test_invalid_settings_leave_the_environment_exactly_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [k for k in os.environ if k.startswith("TASKMON_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TASKMON_BACKEND", "memory")
    path = write(tmp_path / "taskmon.env", "TASKMON_CONCURRENCY_LIMIT=2\n")
    env_file = EnvFile(path)
    env_file.apply(load_settings)
    before = dict(os.environ)
    # Redis mode without a URL is refused by the settings: nothing of the file may stick.
    write(path, "TASKMON_BACKEND=redis\nTASKMON_CONCURRENCY_LIMIT=9\n")
    with pytest.raises(EnvFileError, match="TASKMON_BACKEND") as refused:
        env_file.apply(load_settings)
    assert isinstance(refused.value, ValueError)
    assert dict(os.environ) == before
    assert load_settings().concurrency_limit == 2

    # A later good file is applied against the state the refusal left.
    write(path, "TASKMON_CONCURRENCY_LIMIT=5\n")
    assert env_file.apply(load_settings) == {"TASKMON_CONCURRENCY_LIMIT": "5"}


def test_the_validators_refusal_is_named_and_nothing_applied(tmp_path: Path) -> None:
    def broken() -> None:
        raise ConfigError("TASKMON_X: bad")

    env_file = EnvFile(write(tmp_path / "taskmon.env", "TASKMON_BACKEND=auto\n"), {})
    with pytest.raises(EnvFileError, match="TASKMON_X: bad"):
        env_file.apply(broken)
    assert env_file.environ == {}
