# syntax=docker/dockerfile:1
# garmin2strava daemon image: `docker build -t garmin2strava .` (or `make image`).
# Dependencies come from uv.lock; the final stage holds the virtual environment and
# nothing that built it.

FROM python:3.12-slim AS builder

# Same uv as the Makefile's UV_VERSION (tests/integration/test_infra.py checks).
ARG UV_VERSION=0.13.8
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
RUN pip install --no-cache-dir "uv==${UV_VERSION}"

WORKDIR /src
# Dependencies first, so a source change does not reinstall them. The `sandbox` extra is
# the emulators (sandbox/, a member of the uv workspace, and fitdecode, pure Python), so
# that `docker run IMAGE demo` works as `make demo` does; the daemon never imports them.
# No dev group: no test tools in the image.
COPY pyproject.toml uv.lock ./
COPY sandbox/pyproject.toml ./sandbox/
RUN uv sync --locked --no-dev --extra sandbox --no-install-workspace
COPY README.md ./
COPY sandbox/src ./sandbox/src
COPY src ./src
RUN uv sync --locked --no-dev --extra sandbox --no-editable


FROM python:3.12-slim

RUN groupadd --system --gid 10001 garmin2strava \
    && useradd --system --uid 10001 --gid garmin2strava --home-dir /data --no-create-home garmin2strava \
    && mkdir -p /data \
    && chown garmin2strava:garmin2strava /data

COPY --from=builder /app/.venv /app/.venv

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    G2S_DB_PATH=/data/garmin2strava.sqlite3 \
    G2S_HTTP_HOST=0.0.0.0 \
    G2S_HTTP_PORT=8080 \
    G2S_ADMIN_HOST=127.0.0.1 \
    G2S_ADMIN_PORT=8081

# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /data
VOLUME /data
# 8080: the public port (the webhook and a bare /healthz). 8081: the admin port (the
# detailed /healthz, /metrics), on the container's loopback unless G2S_ADMIN_HOST says
# otherwise (compose.example.yaml publishes it on the host's loopback only).
EXPOSE 8080 8081

# slim has no curl; the standard library is enough. A non-2xx answer raises. It asks
# the admin port, inside the container; the answer says why when it is unhealthy
# (`docker inspect --format '{{json .State.Health}}'`).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; print(urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('G2S_ADMIN_PORT', '8081'), timeout=4).read().decode())"]

# `docker run IMAGE` runs the daemon; `docker run IMAGE <command>` any other CLI command
# (`demo`, `status`, `garmin login`, ...).
ENTRYPOINT ["garmin2strava"]
CMD ["run"]
