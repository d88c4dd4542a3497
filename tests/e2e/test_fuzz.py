"""schemathesis against a live `gunicorn -w 4` in Redis mode, from its own /openapi.json.

Stateless: every operation, valid and invalid inputs (the coverage and fuzzing phases), the
admin operation once without its token and once with it. Stateful: sequences that follow the
document's links from a 202 to the task's status, stream and result. Every answer is checked
against the document (status, media type, headers, body schema) and by schemathesis's other
checks (405 with Allow for an undocumented method, 401 without the token, invalid input
refused, valid input accepted). Then the run's own checks: not one 5xx, and nothing accepted
lost: every task a 202 answered is found (200) by every worker.

The figures go to reports/fuzz/summary.json and to the terminal.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.errors import FailureGroup
from schemathesis.generation.stateful import APIStateMachine

from taskmon.domain import IDEMPOTENCY_KEY_PATTERN
from taskmon.harness.client import call, connect, wait_terminal
from taskmon.harness.redis_server import RedisServer
from taskmon.harness.stack import GunicornInstance
from taskmon.web.openapi import document
from tests.support.http import PinnedClient
from tests.support.stacks import others_than, paused

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

Case = schemathesis.Case[Any]
HostileRequest = tuple[str, str, bytes, dict[str, str]]

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "reports" / "fuzz" / "summary.json"
ADMIN_TOKEN = "fuzz-admin-token"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WORKERS = 4
# The document's own checks: what the answer looks like against what it says.
SCHEMA_CHECKS = {
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
}
ENV = {
    "TASKMON_ENGINE": "tone",
    # 5000 characters (the longest text) take 2.5 s: a stream a link opens ends soon.
    "TASKMON_TONE_MS_PER_CHAR": "0.5",
    "TASKMON_CONCURRENCY_LIMIT": "4",
    "TASKMON_SSE_KEEPALIVE_S": "1",
    "TASKMON_ADMIN_TOKEN": ADMIN_TOKEN,
}
CONFIG: dict[str, Any] = {
    "request-timeout": 15,
    "checks": {
        # A voice the engine does not know is a documented 400 (the voices are the engine's),
        # and so is a key reused with another payload (422): both are valid by the schema.
        "positive_data_acceptance": {
            "expected-statuses": ["2xx", "400", "401", "404", "409", "422", "429"]
        },
    },
}


@dataclass
class Figures:
    """What the run did and found, for the report."""

    stateless_cases: int = 0
    stateless_admin_cases: int = 0
    hostile_cases: int = 0
    refused_by_gunicorn: int = 0
    stateful_steps: int = 0
    stateful_scenarios: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    by_operation: defaultdict[str, Counter[int]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    server_errors: list[str] = field(default_factory=list)
    schema_violations: set[str] = field(default_factory=set)
    other_failures: set[str] = field(default_factory=set)
    accepted: set[str] = field(default_factory=set)
    lost: list[str] = field(default_factory=list)
    workers_checked: int = 0
    started: float = field(default_factory=time.monotonic)

    def record(self, case: Case, response: schemathesis.Response) -> None:
        label = f"{case.method.upper()} {case.formatted_path}"
        self.record_raw(label, case.path, response.status_code, response.content, case.method)

    def record_raw(
        self, label: str, path: str, status: int, body: bytes, method: str = "GET"
    ) -> None:
        self.statuses[status] += 1
        self.by_operation[f"{method.upper()} {path}"][status] += 1
        if status >= 500:
            self.server_errors.append(f"{label} -> {status}: {body[:300]!r}")
        if path == "/api/tts" and status == 202:
            self.accepted.add(json.loads(body)["task_id"])

    def failed(self, case: Case, group: FailureGroup) -> None:
        for failure in group.exceptions:
            entry = f"{case.method.upper()} {case.path}: {failure.title}"
            checks = set(type(failure).checks)
            (self.schema_violations if checks & SCHEMA_CHECKS else self.other_failures).add(entry)

    def summary(self) -> dict[str, Any]:
        return {
            "cases": {
                "stateless": self.stateless_cases,
                "stateless_admin_with_token": self.stateless_admin_cases,
                "hostile_bodies_and_headers": self.hostile_cases,
                "hostile_refused_by_gunicorn_before_the_app": self.refused_by_gunicorn,
                "stateful_steps": self.stateful_steps,
                "stateful_scenarios": self.stateful_scenarios,
            },
            "responses_by_status": {str(k): v for k, v in sorted(self.statuses.items())},
            "responses_by_operation": {
                operation: {str(k): v for k, v in sorted(counts.items())}
                for operation, counts in sorted(self.by_operation.items())
            },
            "server_errors": len(self.server_errors),
            "server_error_samples": self.server_errors[:10],
            "schema_violations": len(self.schema_violations),
            "schema_violation_list": sorted(self.schema_violations),
            "other_check_failures": sorted(self.other_failures),
            "accepted_tasks": len(self.accepted),
            "accepted_tasks_lost": len(self.lost),
            "lost_samples": self.lost[:10],
            "workers_checked": self.workers_checked,
            "seconds": round(time.monotonic() - self.started, 1),
        }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornInstance]:
    root = tmp_path_factory.mktemp("fuzz")
    with RedisServer(workdir=root / "redis") as redis:
        env = {**ENV, "TASKMON_BACKEND": "redis", "TASKMON_REDIS_URL": redis.url}
        with GunicornInstance(workers=WORKERS, env=env, workdir=root / "host") as host:
            yield host


@pytest.fixture(scope="module")
def figures(stack: GunicornInstance) -> Iterator[Figures]:
    found = Figures()
    yield found
    summary = found.summary()
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(summary, indent=2) + "\n")
    shown = {k: v for k, v in summary.items() if k != "responses_by_operation"}
    print(f"\nfuzz figures (all in {REPORT.relative_to(ROOT)}):\n{json.dumps(shown, indent=2)}")


@pytest.fixture(scope="module")
def api_schema(stack: GunicornInstance) -> Any:
    loaded = schemathesis.openapi.from_url(
        f"{stack.base_url}/openapi.json", config=schemathesis.Config.from_dict(CONFIG)
    )
    loaded.config.update(base_url=stack.base_url)
    return loaded


schema = schemathesis.pytest.from_fixture("api_schema")
FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)


def run_case(case: Case, figures: Figures, headers: dict[str, str] | None = None) -> None:
    response = case.call(headers=headers)
    figures.record(case, response)
    try:
        case.validate_response(response, headers=headers)
    except FailureGroup as group:
        figures.failed(case, group)
        raise


@schema.parametrize()
@FUZZ
def test_every_operation_answers_as_documented(case: Case, figures: Figures) -> None:
    figures.stateless_cases += 1
    run_case(case, figures)


@schema.include(path_regex="^/api/admin/").parametrize()
@FUZZ
def test_admin_operations_with_the_token(case: Case, figures: Figures) -> None:
    figures.stateless_admin_cases += 1
    run_case(case, figures, AUTH)


def test_linked_sequences_answer_as_documented(api_schema: Any, figures: Figures) -> None:
    # Not the release by token: schemathesis infers a link to it from GET /api/admin/permits
    # (`holders/*/token`), followed only when a permit is held at that instant, so hypothesis
    # cannot replay a scenario (FlakyStrategyDefinition, about one run in five). The release is
    # fuzzed stateless (unknown tokens); releasing a held one is tests/unit/test_openapi.py's.
    linked = api_schema.exclude(path="/api/admin/permits/{token}", method="DELETE")
    base: type[APIStateMachine] = linked.as_state_machine()

    class Machine(base):  # type: ignore[valid-type,misc]
        def setup(self) -> None:
            super().setup()
            figures.stateful_scenarios += 1
            self.key_prefix = f"s{figures.stateful_scenarios}-"

        def before_call(self, case: Case) -> None:
            # Hypothesis replays a scenario's choices and needs the same answers back; an
            # Idempotency-Key an earlier scenario used would turn a 202 into a replay or a 422.
            super().before_call(case)
            headers = case.headers
            key = None if headers is None else headers.get("Idempotency-Key")
            if (
                headers is not None
                and isinstance(key, str)
                and IDEMPOTENCY_KEY_PATTERN.fullmatch(key)
            ):
                headers["Idempotency-Key"] = (self.key_prefix + key)[:255]

        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return {"headers": AUTH} if case.path.startswith("/api/admin/") else {}

        def after_call(self, response: schemathesis.Response, case: Case) -> None:
            super().after_call(response, case)
            figures.stateful_steps += 1
            figures.record(case, response)

        def validate_response(
            self, response: schemathesis.Response, case: Case, **kwargs: Any
        ) -> None:
            try:
                super().validate_response(response, case, **kwargs)
            except FailureGroup as group:
                figures.failed(case, group)
                raise

    Machine.run(
        settings=settings(
            max_examples=60,
            stateful_step_count=8,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
    )


# What schemathesis does not send, since the document cannot say it: JSON nested deeper than
# the decoder recurses, `\\ud800` escapes (lone surrogates), numbers and Last-Event-IDs of
# thousands of digits, arbitrary bytes, Latin-1 header values. The first two and the long
# Last-Event-ID were 500s.
def _deep(depth: int, opening: bytes, inner: bytes, closing: bytes) -> bytes:
    return opening * depth + inner + closing * depth


def _lone_surrogate(prefix: str, code_point: int) -> bytes:
    return f'{{"text": "{json.dumps(prefix)[1:-1]}\\u{code_point:04x}"}}'.encode()


HOSTILE_BODIES = st.one_of(
    st.builds(_deep, st.integers(500, 30_000), st.just(b"["), st.just(b""), st.just(b"]")),
    st.builds(_deep, st.integers(500, 6_000), st.just(b'{"text":'), st.just(b'"x"'), st.just(b"}")),
    st.builds(_lone_surrogate, st.text(max_size=20), st.integers(0xD800, 0xDFFF)),
    st.builds(lambda n: b'{"text": "x", "voice": ' + b"9" * n + b"}", st.integers(1, 6_000)),
    st.binary(max_size=2_000),
)
LATIN1_HEADER = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=300)
HOSTILE_REQUESTS = st.one_of(
    st.tuples(st.just("POST"), st.just("/api/tts"), HOSTILE_BODIES,
              st.fixed_dictionaries({"Idempotency-Key": LATIN1_HEADER})),
    st.tuples(st.just("PUT"), st.just("/api/admin/concurrency"), HOSTILE_BODIES, st.just(AUTH)),
    st.tuples(st.just("GET"), st.just("/api/task/stream/{task_id}"), st.just(b""),
              st.fixed_dictionaries({"Last-Event-ID": st.one_of(
                  st.integers(1, 8_000).map(lambda n: "9" * n), LATIN1_HEADER)})),
)  # fmt: skip


@pytest.fixture(scope="module")
def done_task(stack: GunicornInstance) -> str:
    answer = call(stack.base_url, "POST", "/api/tts", {"text": "done"})
    assert answer.status == 202, answer.body
    task_id: str = answer.body["task_id"]
    assert wait_terminal([stack.base_url], [task_id])[task_id]["state"] == "done"
    return task_id


@given(hostile=HOSTILE_REQUESTS)
@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=True, database=None)  # fmt: skip
def test_hostile_bodies_and_headers_are_refused_not_crashed(
    stack: GunicornInstance, figures: Figures, done_task: str, hostile: HostileRequest
) -> None:
    method, template, body, headers = hostile
    path = template.replace("{task_id}", done_task)
    figures.hostile_cases += 1
    conn = connect(stack.base_url, timeout=15)
    try:
        conn.request(method, path, body=body or None,
                     headers={"Content-Type": "application/json", "Connection": "close",
                              **headers})  # fmt: skip
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    if response.status == 400 and response.getheader("X-Worker-Id") is None:
        # gunicorn's own refusal (say, a header value with a control character): the request
        # never reached the app, so it is not the document's; it is still no 5xx.
        figures.refused_by_gunicorn += 1
        return
    figures.record_raw(f"{method} {template} (hostile)", template, response.status, data, method)
    documented = document()["paths"][template][method.lower()]["responses"]
    assert str(response.status) in documented, (response.status, data[:300])
    if response.status >= 400:
        assert response.getheader("Content-Type") == "application/problem+json", data[:300]


def pinned_to_every_worker(stack: GunicornInstance) -> dict[str, PinnedClient]:
    """One kept-alive connection per worker (X-Worker-Id). Which worker accepts is the
    kernel's choice, so each one is reached with the others paused for the one request."""
    name = call(stack.base_url, "GET", "/healthz").worker.rpartition(":")[0]
    clients: dict[str, PinnedClient] = {}
    for pid in stack.worker_pids():
        worker = f"{name}:{pid}"
        client = PinnedClient(stack.base_url)
        with paused(stack, *others_than(stack, worker), at_most_s=5.0):
            client.request("GET", "/healthz")
        clients[worker] = client  # closed by the caller, whatever follows
        assert client.workers_seen == {worker}, (client.workers_seen, worker)
    return clients


def test_nothing_accepted_is_lost(stack: GunicornInstance, figures: Figures) -> None:
    assert figures.accepted, "the fuzzing got no 202: nothing to check"
    clients = pinned_to_every_worker(stack)
    try:
        figures.workers_checked = len(clients)
        assert len(clients) == WORKERS, f"reached only {sorted(clients)}"
        for task_id in sorted(figures.accepted):
            for worker, client in clients.items():
                status, _, _ = client.request("GET", f"/api/task/status/{task_id}")
                if status != 200:
                    figures.lost.append(f"{task_id} on {worker}: {status}")
    finally:
        for client in clients.values():
            client.close()
    assert not figures.lost, figures.lost[:10]


def test_no_server_error_and_no_schema_violation(figures: Figures) -> None:
    assert not figures.server_errors, figures.server_errors[:10]
    assert not figures.schema_violations, sorted(figures.schema_violations)
