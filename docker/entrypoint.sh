#!/bin/sh
# The image's entry point: `serve` runs the API under gunicorn, anything else is a `collector` command.
set -eu

if [ "${1:-serve}" = "serve" ]; then
    [ "$#" -gt 0 ] && shift
    # GUNICORN_CMD_ARGS (read by gunicorn itself) adds to these, e.g. "--access-logfile -" for access lines.
    exec gunicorn --bind "0.0.0.0:${PORT:-8000}" --workers "${WEB_CONCURRENCY:-4}" \
        --graceful-timeout 30 "$@" "collector.app:create_app()"
fi
if [ "$1" = "up" ]; then
    shift
    exec collector up --host 0.0.0.0 --port "${PORT:-8000}" "$@"
fi
exec collector "$@"
