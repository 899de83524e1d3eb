#!/usr/bin/env bash
# The test suite: set up on first use, then pytest (extra arguments go to pytest).
#   bash scripts/test.sh              # default suite (slow tests excluded)
#   bash scripts/test.sh -m slow      # the slow end-to-end checks
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
