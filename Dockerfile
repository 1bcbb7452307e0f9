# syntax=docker/dockerfile:1
# Build stage: turn the source into a wheel (and wheels of its dependencies).
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY llmsim ./llmsim
COPY cluster ./cluster
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: only the installed wheels, run as an unprivileged user.
FROM python:3.12-slim
LABEL org.opencontainers.image.title="llmsim" \
      org.opencontainers.image.description="OpenAI-compatible LLM simulator for testing AI gateways" \
      org.opencontainers.image.licenses="MIT"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LLMSIM_HOST=0.0.0.0 \
    LLMSIM_PORT=8000
# The wheels are bind-mounted from the build stage, so they never become a layer of this image.
# Only llmsim's own wheel is named; its dependencies come from the same directory (--no-index).
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/llmsim-*.whl \
    && groupadd --system --gid 10001 llmsim \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/llmsim llmsim
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# A writable working directory: `llmsim cluster` keeps its run dir (./.llmsim/) here.
WORKDIR /home/llmsim
EXPOSE 8000
# Python is in the image already; no curl needed. The instance ID defaults to the container's
# hostname (unique per replica), via <hostname>:<port>, unless LLMSIM_INSTANCE_ID or POD_NAME is set.
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('LLMSIM_PORT', '8000')}/health\", timeout=2)"]
# Equivalent to `llmsim serve --host 0.0.0.0 --port 8000`, but through the environment, so every
# setting (port included) stays overridable with LLMSIM_* variables (a flag would beat them).
CMD ["llmsim", "serve"]
