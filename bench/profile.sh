#!/usr/bin/env bash
# Where Tenantry's time goes: py-spy records one uvicorn worker for 10 s under the GET /v1/users/{id}
# load and writes a speedscope profile to bench/out/ (open it at https://www.speedscope.app).
# Uses its own fresh PostgreSQL database, like bench/run; installs wrk, gunicorn and py-spy when missing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [[ ! -x .venv/bin/py-spy ]]; then
    echo "bench: installing py-spy into .venv" >&2
    .venv/bin/pip install --quiet py-spy
fi

exec bench/run --profile "$@"
