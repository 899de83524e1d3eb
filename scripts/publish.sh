#!/usr/bin/env bash
# Publish what a results folder holds, finished or still running, into results/reference/, then regenerate the
# README's tables and the suite's measured cost from the published records, and check them (tests/test_reference.py).
# A suite of many hours may outlive its machine: publish and commit what is done at least once per sitting, and
# resume elsewhere with `bash scripts/tiny_seeds.sh --from-reference`.
#   bash scripts/publish.sh [RESULTS_DIR] [make_reference.py options]   # default: results
#   then: git add -A results/reference README.md docs/performance.md && git commit
# The tables and the cost read the same records: both come from results/reference/, written once by make_reference.py
# (records finishing meanwhile wait for the next publication). make_reference.py refuses a folder that lacks records
# already published (see its --add / --replace).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(realpath "${1:-results}")
shift || true
.venv/bin/python scripts/make_reference.py "$SRC" "$@"
.venv/bin/python scripts/readme_tables.py --write
.venv/bin/python scripts/suite_cost.py --suite results/reference --write docs/performance.md
OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_reference.py
echo "publish: results/reference, README.md and docs/performance.md regenerated from $SRC; commit them:"
echo "  git add -A results/reference README.md docs/performance.md && git commit"
