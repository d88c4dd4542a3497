"""Reading /metrics as Prometheus would, and holding alert rules to what it exports: parse an
exposition into samples, scrape every worker of an instance, find the promtool binary, list
the metric names each rule of a rule file uses."""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

from taskmon.harness.stack import http_get

ALERT_RULES = Path(__file__).parents[2] / "deploy" / "prometheus" / "taskmon-alerts.yml"
# Every metric taskmon exports starts so; labels, functions and keywords never do.
_METRIC = re.compile(r"\btaskmon_[a-zA-Z0-9_:]*")


@dataclass(frozen=True)
class Scrape:
    worker: str
    text: str
    seconds: float
    status: int

    def samples(self) -> dict[str, float]:
        """`name{label="v",...}` (labels sorted) -> value."""
        return samples_of(self.text)

    def names(self) -> set[str]:
        return {key.split("{", 1)[0] for key in self.samples()}


def samples_of(text: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return found


def scrape(base_url: str, timeout: float = 10.0) -> Scrape:
    started = time.monotonic()
    status, headers, body = http_get(base_url, "/metrics", timeout=timeout)
    return Scrape(
        headers.get("X-Worker-Id", "?"), body.decode(), time.monotonic() - started, status
    )


def scrape_every_worker(base_url: str, workers: int, attempts: int = 400) -> dict[str, Scrape]:
    """One scrape answered by each of `workers` workers (fresh connections until each has
    answered). Raises AssertionError when some never did."""
    seen: dict[str, Scrape] = {}
    for _ in range(attempts):
        answer = scrape(base_url)
        seen.setdefault(answer.worker, answer)
        if len(seen) == workers:
            return seen
    raise AssertionError(f"only {sorted(seen)} answered /metrics in {attempts} scrapes")


def promtool() -> str | None:
    """TASKMON_TEST_PROMTOOL, else promtool on PATH, else None (the test skips what needs it)."""
    named = os.environ.get("TASKMON_TEST_PROMTOOL")
    if named:
        return named
    return shutil.which("promtool")


def rule_metric_names(path: Path = ALERT_RULES) -> dict[str, set[str]]:
    """For each alert (or recording rule) of the file, the metric names its expression uses."""
    document = YAML(typ="safe").load(path.read_text())
    found: dict[str, set[str]] = {}
    for group in document["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule["record"]
            found[name] = set(_METRIC.findall(str(rule["expr"])))
    return found


def unknown_names(rules: dict[str, set[str]], exported: set[str]) -> dict[str, set[str]]:
    """Per rule, the names it uses that `exported` (sample names of a live scrape) lacks."""
    return {rule: names - exported for rule, names in rules.items() if names - exported}
