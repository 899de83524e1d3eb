#!/usr/bin/env bash
# The test suite: set up on first use, then pytest (extra arguments go to pytest).
#   bash scripts/test.sh              # default suite (slow tests excluded)
#   bash scripts/test.sh -m slow      # the slow end-to-end checks
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# one pytest-xdist worker per core (TEST_WORKERS=0: in this process), each test file whole in one worker (its module
# fixtures built once), torch on one thread per worker: with default threads two workers on two cores run many times
# slower than one. The workers share one stage cache (tests/conftest.py).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv/bin/python -m pytest -q -n "${TEST_WORKERS:-auto}" --dist loadfile "$@"
