#!/usr/bin/env bash
# Everything results/reference/ publishes, on the shipped tiny world, in one resumable command (many hours of
# CPU on 2 cores; every stage is cached, so a killed run starts again where it stopped):
#   1. the five-seed suite, every method x attack (scripts/tiny_seeds.sh);
#   2. false positives and ROC on null models that never saw the key (python -m bench.tools.roc); with 1 this is
#      all the main tables read, so it runs before the longer searches and disputes;
#   3. the worst case per method found by search, with its five-seed re-runs (scripts/tiny_search.sh);
#   4. ownership disputes: aligned verification, chains, forged / dual / colluding claims, ROC with alignment
#      (scripts/tiny_disputes.sh);
#   5. the reference folder, its README and the main README's summary, and the suite's measured cost:
#      scripts/make_reference.py, scripts/readme_tables.py --write, scripts/suite_cost.py --suite.
# Records must come from a clean tree (make_reference.py refuses others): commit before you start.
#   bash scripts/tiny_reference.sh                   # into results/, then results/reference/
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/tiny_seeds.sh
OMP_NUM_THREADS=2 .venv/bin/python -m bench.tools.roc results
bash scripts/tiny_search.sh
bash scripts/tiny_disputes.sh
.venv/bin/python scripts/make_reference.py results
.venv/bin/python scripts/readme_tables.py --write
.venv/bin/python scripts/suite_cost.py --suite results --write docs/performance.md
