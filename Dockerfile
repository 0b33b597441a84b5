# syntax=docker/dockerfile:1
# socket_exporter container image. Build (from the repository root):
#   docker build --build-arg VERSION="$(.venv/bin/python -c 'from exporter.version import __version__ as v; print(v)')" \
#     -t socket-exporter:latest .
#
# Default run (non-root, no capabilities): counts every socket of the network namespace it runs in,
# the pid mapping covers only its own processes; the metrics say so (socket_owner_scan_processes
# {result="denied"}, socket_unowned_sockets{reason="not_found"}). SYS_ADMIN (setns) and
# --network-namespaces=all add every container's network namespace (docs/namespaces.md). Full data for the host:
#   docker run -d --name socket-exporter --restart unless-stopped \
#     --network host --pid host --user 0:0 \
#     --cap-drop ALL --cap-add DAC_READ_SEARCH --cap-add SYS_PTRACE --cap-add SYS_ADMIN \
#     --security-opt apparmor=unconfined --read-only \
#     -v /proc:/host/proc:ro -v /run/netns:/run/netns:ro,rslave \
#     socket-exporter:latest --path.procfs=/host/proc --network-namespaces=all
# Why each flag: docs/deployment.md. tests/test_packaging.py replays the build and install steps.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---- build: the wheel, then a virtual environment with the wheel and its dependencies, bcrypt
# included (the [auth] extra: basic_auth_users in a --web.config.file needs it)
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m pip install --no-cache-dir build==1.6.1
COPY pyproject.toml README.md ./
COPY exporter/ exporter/
RUN python -m build --wheel --outdir /dist . \
    && python -m venv /opt/socket-exporter \
    && /opt/socket-exporter/bin/pip install --no-cache-dir "$(echo /dist/*.whl)[auth]" \
    && /opt/socket-exporter/bin/socket-exporter --version

# ---- runtime: the same base, the virtual environment, a non-root user; no compiler, no build tools
FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
ARG VERSION=unknown
LABEL org.opencontainers.image.title="socket_exporter" \
      org.opencontainers.image.description="Prometheus exporter for Linux socket counts by family, type, state and owning process" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/${PYTHON_IMAGE}"
RUN groupadd --system --gid 10001 socket-exporter \
    && useradd --system --no-log-init --uid 10001 --gid socket-exporter \
       --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin socket-exporter
COPY --from=build /opt/socket-exporter /opt/socket-exporter
ENV PATH=/opt/socket-exporter/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 9731/tcp
# The image has no curl. exporter/healthcheck.py fetches /-/healthy where the exporter listens: it
# reads the entrypoint's flags (--web.listen-address, --web.config.file: TLS), and basic-auth
# credentials from SOCKET_EXPORTER_HEALTHCHECK_USERNAME and _PASSWORD_FILE (docs/deployment.md).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/opt/socket-exporter/bin/python", "-m", "exporter.healthcheck"]
ENTRYPOINT ["/opt/socket-exporter/bin/socket-exporter"]
