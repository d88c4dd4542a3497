"""The flask-sse peer: the library's documented set-up, served by gunicorn like taskmon.

BENCH_REDIS_URL=redis://... gunicorn -w 4 -k gthread benchmarks.sse.peer_app:app
"""

from __future__ import annotations

import os

from flask import Flask
from flask_sse import sse

app = Flask(__name__)
app.config["REDIS_URL"] = os.environ["BENCH_REDIS_URL"]
app.register_blueprint(sse, url_prefix="/stream")


@app.get("/healthz")
def healthz() -> tuple[str, int]:
    return "ok", 200
