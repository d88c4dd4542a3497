"""The chaos runner's choices that need no stack: which scenarios run on which fault proxy."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from chaos.proxy_control import chosen_kind
from chaos.runner import main
from chaos.scenarios import SCENARIOS, SMOKE


def test_the_http_faults_are_skipped_on_a_real_toxiproxy_and_say_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOXIPROXY_URL", "http://127.0.0.1:9")  # never contacted
    assert chosen_kind() == "toxiproxy"
    code = main(["--scenario", "http-faults", "--out", str(tmp_path)])
    assert code == 3, "nothing judged: the verdict is unknown, not a pass"
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {s["status"] for s in summary["scenarios"]} == {"skipped"}
    detail = json.loads((run_dir / "http-faults-partition" / "summary.json").read_text())
    assert "no HTTP toxics" in detail["skipped"]
    cases = ET.parse(run_dir / "junit.xml").getroot().findall("testcase")  # noqa: S314 (ours)
    assert all(case.find("skipped") is not None for case in cases)


def test_ours_is_chosen_unless_a_toxiproxy_is_there_or_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TOXIPROXY_URL", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert chosen_kind() == "ours"
    assert chosen_kind("toxiproxy") == "toxiproxy"
    monkeypatch.setenv("TOXIPROXY_URL", "http://127.0.0.1:9")
    assert chosen_kind("ours") == "ours"


def test_the_smoke_set_has_the_http_faults() -> None:
    assert "http-faults" in SMOKE
    assert SCENARIOS["http-faults"].http_front
