# syntax=docker/dockerfile:1
# One image for every wecom-bus service; the command picks the service:
#   docker build -t wecom-bus:local .
#   docker run --rm wecom-bus:local keygen
#   docker run --read-only --tmpfs /tmp --env-file .env wecom-bus:local sender --host 0.0.0.0 --port 8082
# The final stage holds only the Python runtime and a virtualenv: no compiler, no pip cache,
# no source tree. It runs as uid 10001 and writes nothing outside /tmp, so it works with a
# read-only root filesystem (mount /tmp as an emptyDir or tmpfs).

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY examples ./examples

# Build the project's wheel, then install it with the service extras into a venv that the
# final stage copies whole. Every dependency ships manylinux wheels, so no compiler is needed.
# The dev kit (devkit/: fake WeCom, `wecom-bus dev`, embedded Redis) is never copied in: it is a
# distribution of its own, and containers talk to a real Redis and a real WeCom.
RUN python -m venv /opt/wecom-bus \
 && python -m pip wheel --no-deps --wheel-dir /tmp/wheels . \
 && /opt/wecom-bus/bin/pip install "$(ls /tmp/wheels/wecom_bus-*.whl)[ingress,responder,sender]" \
 && /opt/wecom-bus/bin/python -m compileall -q /opt/wecom-bus/lib \
 && /opt/wecom-bus/bin/pip uninstall --yes pip setuptools \
 && /opt/wecom-bus/bin/wecom-bus --help > /dev/null

# ---------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="wecom-bus" \
      org.opencontainers.image.description="WeCom self-built app as async services on Redis Streams" \
      org.opencontainers.image.licenses="MIT"

# Bytecode was compiled in the builder; at run time the root filesystem is read-only.
ENV PATH=/opt/wecom-bus/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp

RUN groupadd --system --gid 10001 wecom \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin wecom

COPY --from=builder /opt/wecom-bus /opt/wecom-bus

# An empty working directory: no .env is read inside the image (configuration comes from the
# environment the orchestrator sets).
WORKDIR /app
USER 10001:10001

# ingress 8080, responder 8081, sender 8082; 9000 is the fake WeCom's, in a demo image that adds
# devkit (this image answers `fake-wecom` with one line saying devkit is not installed)
EXPOSE 8080 8081 8082 9000
STOPSIGNAL SIGTERM

# No curl in slim images. One image serves every service, so the check passes when any of the
# service ports answers /healthz (only one service listens in a container). Compose and
# Kubernetes replace it with per-service probes on /readyz and /healthz.
HEALTHCHECK --interval=15s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request\ndef up(port):\n    try:\n        with urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2) as r:\n            return r.status == 200\n    except OSError:\n        return False\nsys.exit(0 if any(up(p) for p in (8080, 8081, 8082, 9000)) else 1)"]

ENTRYPOINT ["wecom-bus"]
CMD ["ingress", "--host", "0.0.0.0", "--port", "8080"]
