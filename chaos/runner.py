"""`python -m chaos` (what `nox -s chaos` runs): each scenario under load, judged, reported.

For every scenario and policy asked for, a fresh stack: one redis-server, the fault proxy
(proxy_control.py) with one proxy per instance in front of it, and `gunicorn -w N` instances
in Redis mode whose TASKMON_REDIS_URL points at their proxy. Locust runs the load harness's
users at a steady rate; the watcher reads every worker's mode; the steady state is checked
before the fault, during it and after it; the fault is injected and mended; every accepted
task is read back from every instance; the stack stops; the judge rules; the report is
written to reports/chaos/<run>/<scenario>-<policy>/ and summed up in reports/chaos/<run>/.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtests.driving import STOPPING, LoadPlan, Sampler, run_locust, sweep
from loadtests.evidence import read_records
from loadtests.rehearsal import wait_out

from chaos.evidence import ChaosEvidence, TaskEnd
from chaos.faults import FaultRun, Target
from chaos.probes import Watcher, steady_state
from chaos.proxy_control import FaultProxyControl, chosen_kind
from chaos.report import EXIT_CODES, EXIT_UNKNOWN, report_run, report_scenario, skipped_scenario
from chaos.scenarios import LEASE_TTL_MS, LIMIT, SCENARIOS, SMOKE, WORKERS, Scenario
from chaos.stack import ChaosStack, running_chaos_stack, service_settings
from taskmon.harness.client import TERMINAL, call
from taskmon.harness.processes import wait_until

FREEZE_MAX_S = 20.0
WARMUP_S = 6.0  # Locust spawns its users and the permits fill before the fault
AFTER_S = 6.0  # load after the re-promotion, before the last steady-state step
POLICIES = ("partition", "reject")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="nox -s chaos --", description=__doc__, epilog=f"exit codes: {EXIT_CODES}"
    )
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--smoke", action="store_true", help=f"the short set: {', '.join(SMOKE)}")
    chosen.add_argument(
        "--scenario", action="append", choices=sorted(SCENARIOS), help="one scenario (repeatable)"
    )
    parser.add_argument("--policy", choices=(*POLICIES, "both"), default="both")
    parser.add_argument(
        "--proxy", choices=("auto", "toxiproxy", "ours"), default="auto",
        help="auto: TOXIPROXY_URL, else toxiproxy-server on PATH, else taskmon fault-proxy",
    )  # fmt: skip
    parser.add_argument("--users", type=int, default=12, help="Locust users (steady)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="VARIABLE=VALUE",
        help="one more setting for the service (e.g. TASKMON_BACKEND=memory: the checkers fail)",
    )  # fmt: skip
    parser.add_argument(
        "--fault-seconds", type=float, help="how long each fault lasts (default: the scenario's)"
    )
    parser.add_argument("--drain", type=float, default=60.0, help="seconds the sweep may wait")
    parser.add_argument("--out", type=Path, default=Path("reports/chaos"))
    args = parser.parse_args(argv)
    for item in args.set:
        name, sep, _ = item.partition("=")
        if not sep or not name.startswith("TASKMON_"):
            parser.error(f"--set {item}: give a TASKMON_ variable as VARIABLE=VALUE")
    if args.users <= 0:
        parser.error("--users must be positive")
    if args.fault_seconds is not None and not 3.0 <= args.fault_seconds <= 600:
        parser.error("--fault-seconds must be 3 to 600 (the steady state is probed 1.5 s in)")
    return args


def chosen_scenarios(args: argparse.Namespace) -> list[Scenario]:
    names = list(SMOKE) if args.smoke else (args.scenario or list(SCENARIOS))
    chosen = [SCENARIOS[name] for name in names]
    if args.fault_seconds:
        chosen = [dataclasses.replace(s, seconds=args.fault_seconds) for s in chosen]
    for number, scenario in enumerate(chosen):
        if scenario.fault == "freeze-worker" and scenario.seconds > FREEZE_MAX_S:
            # Past gunicorn's worker timeout (30 s) the master kills the frozen worker, and
            # the run would judge a kill as a freeze.
            print(f"chaos: {scenario.name} frozen {FREEZE_MAX_S:.0f} s, not "
                  f"{scenario.seconds:.0f} (gunicorn kills a worker silent for 30 s)")  # fmt: skip
            chosen[number] = dataclasses.replace(scenario, seconds=FREEZE_MAX_S)
    return chosen


def chosen_policies(args: argparse.Namespace, scenario: Scenario) -> list[str]:
    if args.policy != "both":
        return [args.policy]
    if args.smoke and scenario.name != "redis-down":
        return ["partition"]  # the smoke set runs both policies on its first scenario only
    return list(POLICIES)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.proxy == "toxiproxy" and chosen_kind("auto") != "toxiproxy":
        print("chaos: --proxy toxiproxy: set TOXIPROXY_URL or put toxiproxy-server on PATH",
              file=sys.stderr)  # fmt: skip
        return EXIT_UNKNOWN
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    label = "smoke" if args.smoke else "full" if not args.scenario else "+".join(args.scenario)
    run_dir = (args.out / f"{stamp}-{label[:60]}-{uuid.uuid4().hex[:6]}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"chaos: report in {run_dir}", flush=True)
    results = []
    for scenario in chosen_scenarios(args):
        for policy in chosen_policies(args, scenario):
            if STOPPING.is_set():
                break
            if scenario.http_front and chosen_kind(args.proxy) != "ours":
                # Toxiproxy's toxics are TCP only: the HTTP faults are taskmon's proxy's own.
                why = (
                    "Toxiproxy has no HTTP toxics (http_error, slow_headers): run with --proxy ours"
                )
                results.append(skipped_scenario(run_dir / f"{scenario.name}-{policy}", scenario,
                                                policy, why))  # fmt: skip
                continue
            results.append(run_one(args, scenario, policy, run_dir))
    return report_run(run_dir, results, stopped=STOPPING.is_set())


def run_one(
    args: argparse.Namespace, scenario: Scenario, policy: str, run_dir: Path
) -> dict[str, Any]:
    from loadtests.driving import interrupts_as_keyboard  # noqa: PLC0415

    out = run_dir / f"{scenario.name}-{policy}"
    out.mkdir(parents=True, exist_ok=True)
    print(f"\n== {scenario.name} ({policy}): {scenario.summary}", flush=True)
    evidence = ChaosEvidence(
        scenario=scenario, policy=policy, limit=LIMIT, workers=WORKERS,
        lease_ttl_s=LEASE_TTL_MS / 1000, journal_dir=out / "stack" / "journal",
    )  # fmt: skip
    trouble: list[str] = []
    extra: dict[str, object] = {}
    with interrupts_as_keyboard():
        try:
            gather(args, scenario, policy, out, evidence, trouble, extra)
        except KeyboardInterrupt:
            trouble.append("interrupted: the scenario stopped early, so its verdict is unknown")
        except Exception as exc:  # whatever broke, the report says so
            trouble.append(f"the scenario broke off: {type(exc).__name__}: {exc}")
    return report_scenario(out, evidence, trouble, extra)


def gather(  # noqa: PLR0917
    args: argparse.Namespace,
    scenario: Scenario,
    policy: str,
    out: Path,
    evidence: ChaosEvidence,
    trouble: list[str],
    extra: dict[str, object],
) -> None:
    """Run the scenario and collect the evidence; everything is stopped when it returns."""
    settings = service_settings(policy, args.set)
    with running_chaos_stack(
        scenario, settings, out / "stack", evidence.journal_dir, proxy=args.proxy
    ) as stack:
        proxies = stack.proxies
        extra["fault_proxy"] = {
            "kind": proxies.kind,
            "url": proxies.url,
            "version": proxies.version,
        }
        print(
            f"  {scenario.instances} instance(s) x {WORKERS // scenario.instances} workers, "
            f"{stack.backend} mode, limit {LIMIT}; fault proxy: {proxies.kind} {proxies.version}",
            flush=True,
        )
        under_load(args, scenario, policy, out, stack, evidence, trouble)
        accepted = sorted({r["task"] for r in evidence.records if r["k"] == "accepted"})
        print(f"  reading {len(accepted)} accepted tasks on every instance", flush=True)
        evidence.endings = read_endings(stack.bases, accepted, args.drain)
        extra["proxy_stats"] = {name: _proxy_stats(proxies, name) for name in stack.all_proxies}
    # Down now, and the fault proxy reset (or killed): whatever that teardown met is trouble.
    trouble.extend(stack.proxies.trouble)
    # The stack is stopped: every journal and log is complete.
    evidence.logs = {i: inst.log_tail(10**7) for i, inst in enumerate(stack.instances)}


def under_load(  # noqa: PLR0917
    args: argparse.Namespace,
    scenario: Scenario,
    policy: str,
    out: Path,
    stack: ChaosStack,
    evidence: ChaosEvidence,
    trouble: list[str],
) -> None:
    """Load, steady state before, the fault (steady state during), the recovery, steady
    state after; the load is stopped and its records read on every path."""
    bases = stack.bases
    watcher = Watcher(bases)
    watcher.start()
    stop_file = out / "stop-load"
    plan = LoadPlan("steady", args.users, 600.0, stop_file, front=stack.front)  # ends on the file
    outcome: dict[str, tuple[float, float, list[str]]] = {}
    locust = threading.Thread(
        target=lambda: outcome.setdefault(
            "locust",
            run_locust(plan, bases, out, uuid.uuid4().hex[:6], Sampler(bases, permits=False)),
        ),
        name="chaos-locust",
    )

    def step(name: str) -> None:
        evidence.steps.append(steady_state(
            name, bases, cut=set(scenario.cut_instances), policy=policy,
            workers_per_instance=WORKERS // scenario.instances, redis_fault=scenario.redis_fault,
        ))  # fmt: skip

    evidence.load_start = time.monotonic()
    locust.start()
    try:
        STOPPING.wait(WARMUP_S)
        step("before")
        evidence.pids = {i: inst.worker_pids() for i, inst in enumerate(stack.instances)}
        target = Target(stack.redis, stack.proxies, stack.proxy_names, stack.instances,
                        evidence.journal_dir, stack.front_proxy)  # fmt: skip
        fault = FaultRun(scenario, target, STOPPING)
        evidence.windows = fault.windows
        print(f"  fault: {scenario.fault} for {scenario.seconds:.0f} s", flush=True)
        try:
            fault.run(lambda: step("during"))
        finally:
            evidence.victim, evidence.held_by_victim = fault.victim, fault.held_by_victim
            if scenario.fault == "kill-worker" and fault.victim is not None:
                evidence.deaths[fault.victim] = fault.windows[0].start
        if scenario.redis_fault:
            _wait_back_on_redis(watcher, time.monotonic())
        STOPPING.wait(AFTER_S)
        step("after")
    finally:
        stop_file.touch()
        wait_out(locust)
        evidence.load_end = time.monotonic()
        watcher.stop()
        evidence.looks = list(watcher.looks)
        _, _, problems = outcome.get("locust", (0.0, 0.0, ["Locust did not report"]))
        trouble.extend(problems)
        evidence.records = read_records(out / "records")


def _proxy_stats(proxies: FaultProxyControl, name: str) -> object:
    try:
        return proxies.details(name).get("stats", "not reported by this proxy")
    except Exception as exc:
        return f"unreadable: {exc}"


def _wait_back_on_redis(watcher: Watcher, since: float) -> None:
    """Until every worker heard since `since` says it is not degraded (20 s at most: the
    judge, not this wait, rules on how long it took)."""
    with contextlib.suppress(TimeoutError):
        wait_until(
            lambda: _all_back(watcher.mode_by_worker(since)),
            timeout=20, interval=0.1, what="every worker back on Redis",
        )  # fmt: skip


def _all_back(modes: dict[str, bool]) -> bool:
    return bool(modes) and not any(modes.values())


def read_endings(bases: list[str], task_ids: list[str], drain_s: float) -> dict[str, TaskEnd]:
    """Each task's end: waited for (the load harness's sweep), then read on every instance."""
    swept = sweep(bases, task_ids, drain_s)

    def read(task_id: str) -> TaskEnd:
        by_instance: dict[int, str] = {}
        error = None
        for index, base in enumerate(bases):
            try:
                answer = call(base, "GET", f"/api/task/status/{task_id}", timeout=5)
            except Exception as exc:
                by_instance[index] = f"no answer ({type(exc).__name__})"
                continue
            body = answer.body if isinstance(answer.body, dict) else {}
            state = body.get("state") if answer.status == 200 else None
            by_instance[index] = state if state in TERMINAL else str(state or answer.status)
            error = (body.get("error") or {}).get("code") or error
        return TaskEnd(swept[task_id].state, error, by_instance)

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        return dict(zip(task_ids, pool.map(read, task_ids), strict=True))


if __name__ == "__main__":
    sys.exit(main())
