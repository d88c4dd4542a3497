"""TASKMON_ENV_FILE: what the master applies, what it refuses, and what a refusal leaves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taskmon.config import ConfigError, load_settings
from taskmon.env_file import (
    START_ONLY,
    EnvFile,
    EnvFileError,
    file_variables,
    read_env_file,
    shown,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("TASKMON_")]:
        monkeypatch.delenv(name)


def test_reads_taskmon_variables_with_comments_quotes_and_no_expansion(tmp_path: Path) -> None:
    path = write(
        tmp_path / "taskmon.env",
        "# gray release\n\nTASKMON_BACKEND=redis\nexport TASKMON_CONCURRENCY_LIMIT=6\n"
        "TASKMON_KEY_PREFIX='canary'  # inline comment\nTASKMON_ADMIN_TOKEN=${HOME}\n"
        'TASKMON_ACCESS_LOG=""\n',
    )
    assert read_env_file(path) == {
        "TASKMON_BACKEND": "redis",
        "TASKMON_CONCURRENCY_LIMIT": "6",
        "TASKMON_KEY_PREFIX": "canary",
        "TASKMON_ADMIN_TOKEN": "${HOME}",
        "TASKMON_ACCESS_LOG": "",
    }


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("PATH=/tmp\n", r"taskmon.env:1: 'PATH' is not a variable taskmon reads"),
        ("TASKMON_BAKEND=redis\n", "'TASKMON_BAKEND' is not a variable"),  # a typo
        ("TASKMON_ENV_FILE=/other\n", "'TASKMON_ENV_FILE' is not a variable"),
        ("TASKMON_WORKER_INDEX=1\n", "'TASKMON_WORKER_INDEX' is not a variable"),
        ("'TASKMON_X=Y'=z\n", "is not a variable"),
        ("# ok\nTASKMON_BACKEND\n", "taskmon.env:2: TASKMON_BACKEND has no value"),
        ("TASKMON_BACKEND redis\n", "cannot parse 'TASKMON_BACKEND redis'"),  # dotenv would skip it
        ("TASKMON_KEY_PREFIX='open\n", "cannot parse"),
        ("TASKMON_KEY_PREFIX=a\0b\n", "holds a NUL character"),
        ("TASKMON_BACKEND=redis\nTASKMON_BACKEND=memory\n", ":2: TASKMON_BACKEND is set twice"),
    ],
)
def test_refuses_what_it_cannot_take_naming_the_line(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(EnvFileError, match=named):
        read_env_file(write(tmp_path / "taskmon.env", text))


def test_takes_every_setting_and_the_start_only_variables() -> None:
    taken = file_variables()
    assert {"TASKMON_BACKEND", "TASKMON_REDIS_URL", "TASKMON_CONCURRENCY_LIMIT"} <= taken
    assert taken >= START_ONLY
    assert "TASKMON_WORKER_INDEX" not in taken


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(EnvFileError, match="cannot be read"):
        read_env_file(tmp_path / "missing.env")


def test_the_file_overrides_and_a_dropped_key_falls_back_to_the_start(tmp_path: Path) -> None:
    environ = {"TASKMON_BACKEND": "memory", "OTHER": "kept"}
    path = write(tmp_path / "taskmon.env", "TASKMON_BACKEND=auto\nTASKMON_CONCURRENCY_LIMIT=3\n")
    env_file = EnvFile(path, environ)
    changed = env_file.apply(lambda: None)
    assert changed == {"TASKMON_BACKEND": "auto", "TASKMON_CONCURRENCY_LIMIT": "3"}
    assert environ == {"TASKMON_BACKEND": "auto", "OTHER": "kept", "TASKMON_CONCURRENCY_LIMIT": "3"}

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


@pytest.mark.usefixtures("clean_environ")
def test_invalid_settings_leave_the_environment_exactly_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKMON_BACKEND", "memory")
    path = write(tmp_path / "taskmon.env", "TASKMON_CONCURRENCY_LIMIT=2\n")
    env_file = EnvFile(path)
    env_file.apply(load_settings)
    before = dict(os.environ)
    # Redis mode without a URL is refused by the settings: nothing of the file may stick.
    write(path, "TASKMON_BACKEND=redis\nTASKMON_CONCURRENCY_LIMIT=9\n")
    with pytest.raises(EnvFileError, match="TASKMON_BACKEND") as refused:
        env_file.apply(load_settings)
    assert isinstance(refused.value, ConfigError)
    assert dict(os.environ) == before
    assert load_settings().concurrency_limit == 2

    # A later good file is applied against the state the refusal left.
    write(path, "TASKMON_CONCURRENCY_LIMIT=5\n")
    assert env_file.apply(load_settings) == {"TASKMON_CONCURRENCY_LIMIT": "5"}


def test_a_reload_refuses_to_change_what_is_read_at_start_only(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    path = write(tmp_path / "taskmon.env", "TASKMON_THREADS=8\nTASKMON_BACKEND=memory\n")
    env_file = EnvFile(path, environ)
    env_file.apply(lambda: None)  # at start, it is read like any other
    write(path, "TASKMON_THREADS=8\nTASKMON_BACKEND=redis\n")  # unchanged: fine
    assert env_file.apply(lambda: None, reloading=True) == {"TASKMON_BACKEND": "redis"}
    for text in ("TASKMON_THREADS=16\n", "TASKMON_BACKEND=memory\n"):  # changed, or dropped
        write(path, text)
        with pytest.raises(EnvFileError, match="TASKMON_THREADS is read when the master starts"):
            env_file.apply(lambda: None, reloading=True)
        assert environ == {"TASKMON_THREADS": "8", "TASKMON_BACKEND": "redis"}


def test_what_gunicorn_sets_after_fork_cannot_come_from_the_file(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    env_file = EnvFile(write(tmp_path / "taskmon.env", "TASKMON_CONCURRENCY_LIMIT=3\n"), environ)
    with pytest.raises(EnvFileError, match="TASKMON_CONCURRENCY_LIMIT is also set by gunicorn"):
        env_file.apply(lambda: None, fixed={"TASKMON_CONCURRENCY_LIMIT": "7"})
    assert environ == {}


def test_the_validators_refusal_is_named_and_nothing_applied(tmp_path: Path) -> None:
    def broken() -> None:
        raise ConfigError("TASKMON_X: bad")

    env_file = EnvFile(write(tmp_path / "taskmon.env", "TASKMON_BACKEND=auto\n"), {})
    with pytest.raises(EnvFileError, match="TASKMON_X: bad"):
        env_file.apply(broken)
    assert env_file.environ == {}


def test_a_re_executed_master_starts_from_the_start_environment(tmp_path: Path) -> None:
    environ = {"TASKMON_BACKEND": "memory"}
    path = write(tmp_path / "taskmon.env", "TASKMON_BACKEND=redis\nTASKMON_CONCURRENCY_LIMIT=3\n")
    env_file = EnvFile(path, environ)
    env_file.apply(lambda: None)
    snapshot = dict(environ)  # what gunicorn copies into cfg.env_orig at a reload
    env_file.restore_into(snapshot)
    assert snapshot == {"TASKMON_BACKEND": "memory"}
    # gunicorn copies env_orig before on_reload applies the file: after a reload that
    # dropped the limit, the copy still holds it, and it must not survive into a new master.
    write(path, "TASKMON_BACKEND=redis\n")
    stale = dict(environ)
    env_file.apply(lambda: None)
    env_file.restore_into(stale)
    assert stale == {"TASKMON_BACKEND": "memory"}


def test_secrets_are_hidden_in_what_is_logged() -> None:
    changed = {"TASKMON_REDIS_URL": "redis://:pw@h", "TASKMON_ADMIN_TOKEN": "t", "TASKMON_X": "1"}
    assert shown(changed) == {
        "TASKMON_REDIS_URL": "<hidden>",
        "TASKMON_ADMIN_TOKEN": "<hidden>",
        "TASKMON_X": "1",
    }
