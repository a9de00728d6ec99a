# syntax=docker/dockerfile:1

# Builder: install the package and its dependencies into a self-contained venv.
# Both stages use the same base image, so the venv's interpreter path is valid in the final one.
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# pyproject.toml names README.md as the readme: the build needs it.
COPY pyproject.toml README.md ./
COPY receiver ./receiver
# Not editable: the package is copied into the venv, so the final image needs no /src.
# pip compiles the bytecode here; the final image runs on a read-only root filesystem.
RUN pip install .

# Final: the slim base image plus the venv, run as a non-root user with a numeric UID
# (Kubernetes checks runAsNonRoot against a numeric UID).
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN groupadd --system --gid 10001 receiver \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin receiver

COPY --from=builder /opt/venv /opt/venv

USER 10001:10001
# Webhook, API, probes and /metrics (RECEIVER_PORT).
EXPOSE 8080

ENTRYPOINT ["rollback-receiver"]
CMD ["serve"]
