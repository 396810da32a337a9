#!/bin/sh
# The image's entry point: `serve` runs the API (`collector serve`: waitress, with timeouts against slow clients)
# on $PORT, `up` runs everything in one container, anything else is a `collector` command.
set -eu

if [ "${1:-serve}" = "serve" ]; then
    [ "$#" -gt 0 ] && shift
    exec collector serve --host 0.0.0.0 --port "${PORT:-8000}" "$@"
fi
if [ "$1" = "up" ]; then
    shift
    exec collector up --host 0.0.0.0 --port "${PORT:-8000}" "$@"
fi
exec collector "$@"
