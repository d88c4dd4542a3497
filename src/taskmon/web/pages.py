"""The monitor page and the operational endpoints: /healthz, /readyz, /metrics."""

from __future__ import annotations

import json
from collections.abc import Callable

from flask import Blueprint, Response, render_template, url_for

from taskmon import metrics
from taskmon.web.context import runtime
from taskmon.web.problems import problem

bp = Blueprint("pages", __name__)

# Per-worker state, when the service reports it; the page says "unavailable" on a 404.
WORKERS_URL = "/api/monitor/workers"


@bp.get("/monitor")
def monitor_page() -> str:
    """The monitor page: a static shell; static/monitor.js polls the JSON endpoints it names."""
    return render_template(
        "monitor.html",
        stats_url=url_for("api.stats"),
        permits_url=url_for("api.permits"),
        recent_url=url_for("api.recent"),
        workers_url=WORKERS_URL,
        static_charts_js=url_for("static", filename="monitor_charts.js"),  # deferred: first
        static_js=url_for("static", filename="monitor.js"),
        static_css=url_for("static", filename="monitor.css"),
    )


@bp.get("/favicon.ico")
def favicon() -> Response:
    """No icon: browsers ask for one with every page, and a 404 would be an error in their
    console (the page tests hold the console clean)."""
    return Response(status=204, headers={"Cache-Control": "max-age=86400"})


@bp.get("/healthz")
def healthz() -> Response:
    """The process answers. Says nothing of its dependencies (that is /readyz)."""
    return Response('{"status":"ok"}', mimetype="application/json")


@bp.get("/readyz")
def readyz() -> Response:
    """Ready when the task store answers (or the worker serves degraded from its own memory),
    the engine can run and results can be written."""
    rt = runtime()
    checks = {
        "monitor": _safe(rt.monitor.ping),
        "engine": _safe(rt.engine.available),
        "result_dir": _safe(rt.results.writable),
    }
    # A degraded worker still serves (its own memory): keep it in the load balancer.
    required = {name: ok for name, ok in checks.items() if name != "monitor" or not rt.degraded}
    draining = rt.service.draining
    if draining:
        # An operator's order: out of the load balancer, while it finishes what it holds.
        return problem(
            503,
            "draining: this worker admits no new task and finishes what it holds",
            slug="draining",
            checks=checks,
            draining=True,
            backend=rt.monitor.backend,
            target=rt.backend_target,
        )
    ready = all(required.values())
    body = {
        "status": ("degraded" if rt.degraded else "ready") if ready else "not ready",
        "backend": rt.monitor.backend,
        "target": rt.backend_target,  # the Redis URL without its password
        "degraded": rt.degraded,
        "checks": checks,
    }
    if ready:
        return Response(json.dumps(body), mimetype="application/json")
    failing = ", ".join(name for name, ok in required.items() if not ok)
    return problem(
        503,
        f"not ready: {failing}",
        slug="not-ready",
        checks=checks,
        backend=body["backend"],
        target=body["target"],
    )


@bp.get("/metrics")
def metrics_page() -> Response:
    body, content_type = metrics.exposition(runtime().collectors)
    return Response(body, content_type=content_type)


def _safe(check: Callable[[], bool]) -> bool:
    try:
        return bool(check())
    except Exception:
        return False
