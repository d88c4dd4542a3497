# taskmon's images (docs/deployment.md):
#   docker build -t taskmon .                          the service (the last stage, `service`)
#   docker build --target loadtest -t taskmon-load .   the service's code plus Locust and loadtests/
# compose.yaml builds both; tests/unit/test_deployment_files.py checks this file against the
# project (settings, entry points, routes) without a Docker engine.

FROM python:3.11-slim AS base

# espeak-ng is the real speech engine; without it taskmon silently runs its `tone` engine,
# which is a test double, not speech.
RUN apt-get update \
 && apt-get install -y --no-install-recommends espeak-ng \
 && rm -rf /var/lib/apt/lists/*

# Unbuffered, so log lines reach `docker logs` as they happen rather than at exit.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
# README.md is part of the package metadata (pyproject's `readme`): the build fails without it.
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install .

# A fixed numeric id, so an orchestrator's "must not run as root" check can verify it from
# the image alone. The result directory is created here, owned by that user, because a named
# volume mounted on it copies its ownership on first use; a root-owned volume would make every
# synthesis fail with `storage_error`.
RUN groupadd --system --gid 10001 taskmon \
 && useradd --system --uid 10001 --gid taskmon --home-dir /var/lib/taskmon --create-home \
      --shell /usr/sbin/nologin taskmon \
 && mkdir -p /var/lib/taskmon/results \
 && chown -R taskmon:taskmon /var/lib/taskmon
# The setting's own default is under $HOME/.local/share, where no volume is mounted.
ENV TASKMON_RESULT_DIR=/var/lib/taskmon/results
USER 10001:10001


# The Locust image for compose.yaml's `loadtest` profile: the same taskmon (loadtests/ imports
# taskmon.harness) plus pyproject's `load` group, so the Locust version is pinned in one place.
FROM base AS loadtest
USER root
# `pip install --group` (dependency groups) needs pip 25.1; the base image's pip may be older.
RUN pip install "pip>=25.1" \
 && pip install --group load
COPY loadtests ./loadtests
USER 10001:10001
# loadtests/locustfile.py imports its siblings as the `loadtests` package, from /app.
ENV PYTHONPATH=/app
EXPOSE 8089
CMD ["locust", "-f", "loadtests/locustfile.py", "--host", "http://taskmon:8000"]


# Last, so a plain `docker build .` gives the service and never builds the Locust stage.
FROM base AS service
EXPOSE 8000
# python, not curl: the slim image has no curl. urlopen raises on any non-2xx answer, so the
# check fails exactly when /healthz does. Liveness only: readiness (Redis answering) is /readyz,
# which compose.yaml uses, since only the deployment knows whether it has a Redis.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
# `taskmon serve` execs gunicorn, so gunicorn's master is PID 1 and gets `docker stop`'s
# SIGTERM itself: a graceful shutdown that fails unstarted tasks as `abandoned`.
CMD ["taskmon", "serve", "--workers", "4", "--bind", "0.0.0.0:8000"]
