"""Against real gunicorn workers: a body not declared JSON is 415 whatever it holds, and the
result directory is brought under TASKMON_RESULT_MAX_BYTES by the sweep a worker runs at start."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from taskmon.harness.client import connect
from taskmon.harness.stack import GunicornInstance
from tests.support.timing import wait_for

pytestmark = pytest.mark.e2e

TOKEN = "e2e-admin-token-bodies"


def send(
    base_url: str, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], Any]:
    conn = connect(base_url, 10)
    try:
        conn.request(method, path, body=body, headers={"Connection": "close", **headers})
        response = conn.getresponse()
        raw = response.read()
        return response.status, dict(response.getheaders()), json.loads(raw) if raw else None
    finally:
        conn.close()


def test_only_a_body_declared_json_is_read(tmp_path: Path) -> None:
    env = {
        "TASKMON_BACKEND": "memory",
        "TASKMON_ENGINE": "tone",
        "TASKMON_TONE_MS_PER_CHAR": "0",
        "TASKMON_ADMIN_TOKEN": TOKEN,
    }
    body = json.dumps({"text": "declared"}).encode()
    with GunicornInstance(workers=1, env=env, workdir=tmp_path) as stack:
        for content_type in ("text/plain", "text/plain;charset=UTF-8", None):
            headers: dict[str, str] = {} if content_type is None else {"Content-Type": content_type}
            status, answer_headers, problem = send(
                stack.base_url, "POST", "/api/tts", body, headers
            )
            assert status == 415, problem
            assert answer_headers["Content-Type"] == "application/problem+json"
            assert answer_headers["Accept-Post"] == "application/json"
            assert problem["type"] == "urn:taskmon:problem:unsupported-media-type"
        key = {"Idempotency-Key": f"e2e-{uuid.uuid4().hex}"}
        for content_type, expected in (
            ("application/json; charset=utf-8", 202),
            ("application/json", 200),  # the replay of the same key and payload
            ("application/vnd.example+json", 200),
        ):
            status, answer_headers, accepted = send(
                stack.base_url, "POST", "/api/tts", body, {"Content-Type": content_type, **key}
            )
            assert status == expected, accepted
        admin = {"Authorization": f"Bearer {TOKEN}"}
        status, _, problem = send(
            stack.base_url, "PUT", "/api/admin/concurrency", b'{"limit": 3}',
            {"Content-Type": "text/plain", **admin},
        )  # fmt: skip
        assert status == 415, problem
        status, _, applied = send(
            stack.base_url, "PUT", "/api/admin/concurrency", b'{"limit": 3}',
            {"Content-Type": "application/json", **admin},
        )  # fmt: skip
        assert (status, applied["limit"]) == (200, 3)


def test_a_worker_brings_the_result_directory_under_its_bound_at_start(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    now = time.time()
    files = []
    for age_h in range(6, 0, -1):  # six results of 10 KB, an hour apart, the oldest first
        path = results / f"{uuid.uuid4().hex}.wav"
        path.write_bytes(b"\0" * 10_000)
        os.utime(path, (now - age_h * 3600, now - age_h * 3600))
        files.append(path)
    writing = results / f".{uuid.uuid4().hex}.wav.x1y2z3.tmp"
    writing.write_bytes(b"\0" * 10_000)
    env = {
        "TASKMON_BACKEND": "memory",
        "TASKMON_ENGINE": "tone",
        "TASKMON_RESULT_DIR": str(results),
        "TASKMON_RESULT_MAX_BYTES": "35000",
    }
    with GunicornInstance(workers=2, env=env, workdir=tmp_path / "stack") as stack:

        def sweep_lines() -> list[str]:
            return [line for line in stack.log_tail(400).splitlines() if "result sweep of" in line]

        def removed_in_log() -> int:
            return sum(int(line.split("removed ")[1].split(" file")[0]) for line in sweep_lines())

        # 70 KB with the temp file: the four oldest results go, 30 KB stay. Both workers swept
        # the same directory: between them, the four files, none counted twice.
        wait_for(lambda: removed_in_log() >= 4, message="the sweep's log lines")
        lines = sweep_lines()
    assert removed_in_log() == 4, lines
    assert [p.exists() for p in files] == [False] * 4 + [True] * 2
    assert writing.exists(), "a synthesis's temp file was removed"
    assert all(" INFO " in line and "by size, oldest first" in line for line in lines), lines
