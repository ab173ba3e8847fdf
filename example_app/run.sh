#!/usr/bin/env bash
# Set up flask_athena in .venv and serve the example app on http://127.0.0.1:5000/
#   bash example_app/run.sh [--port N]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q -e .
exec .venv/bin/python -m example_app "$@"
