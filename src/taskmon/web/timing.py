"""The per-process HTTP latency histogram: every answer observed by endpoint, method and
status class.

Labels stay few whatever the traffic: the endpoint is Flask's name for the view (never the
path, which carries task ids), `unmatched` for a path no view serves; methods outside the
usual set are `other`; the status is its class (`2xx` ... `5xx`). An SSE stream is observed
when its headers leave (the stream itself may last minutes).
"""

from __future__ import annotations

import time

from flask import Flask, Response, g, request

from taskmon import metrics

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


def init_timing(app: Flask) -> None:
    """Observe every answer of `app` in taskmon_http_request_duration_seconds."""

    @app.before_request
    def _started() -> None:
        g.taskmon_started = time.perf_counter()

    @app.after_request
    def _observed(response: Response) -> Response:
        started = g.get("taskmon_started")
        if started is not None:
            method = request.method if request.method in _METHODS else "other"
            metrics.HTTP_REQUEST_SECONDS.labels(
                request.endpoint or "unmatched", method, f"{response.status_code // 100}xx"
            ).observe(time.perf_counter() - started)
        return response
