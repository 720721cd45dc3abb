# syntax=docker/dockerfile:1
# The MHQ sync agent: `mhq-agent run` as a non-root user on a slim Python base.
# The build stage installs the package into a virtual environment; the final stage
# copies only that environment, so pip caches and build tools stay behind.
ARG PYTHON_IMAGE=public.ecr.aws/docker/library/python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY agent ./agent
# Only the runtime dependencies: the infra and dev extras (CDK, test tools) stay out.
# All of them ship binary wheels for linux x86_64 and arm64, so no compiler is needed.
RUN /opt/venv/bin/pip install --no-cache-dir . \
    && /opt/venv/bin/pip uninstall --yes pip setuptools \
    && find /opt/venv -name '__pycache__' -type d -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin mhq
COPY --from=build /opt/venv /opt/venv
USER 10001
WORKDIR /tmp
# `mhq-agent run` touches /tmp/mhq-agent.alive on every scheduler loop, at least once
# a minute; a file older than 5 minutes means the loop is stuck.
HEALTHCHECK --interval=60s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, sys, time; sys.exit(0 if time.time() - os.stat('/tmp/mhq-agent.alive').st_mtime < 300 else 1)"]
ENTRYPOINT ["mhq-agent"]
CMD ["run"]
