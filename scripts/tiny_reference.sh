#!/usr/bin/env bash
# Everything results/reference/ publishes, on the shipped tiny world, in one resumable command (many hours of
# CPU on 2 cores; every stage is cached, so a killed run starts again where it stopped):
#   1. the five-seed suite, every method x attack (scripts/tiny_seeds.sh);
#   2. false positives and ROC on null models that never saw the key (python -m bench.tools.roc); with 1 this is
#      all the main tables read, so it runs before the longer searches and disputes;
#   3. the worst case per method found by search, with its five-seed re-runs (scripts/tiny_search.sh);
#   4. ownership disputes: aligned verification, chains, forged / dual / colluding claims, ROC with alignment
#      (scripts/tiny_disputes.sh);
#   5. the reference folder, its README and the main README's summary, and the suite's measured cost
#      (scripts/publish.sh: make_reference.py, readme_tables.py --write, suite_cost.py --suite, then their test).
# Hours of CPU may outlive the machine: while it runs, `bash scripts/publish.sh` and a commit keep what is done.
# Records must come from a clean tree (make_reference.py refuses others): commit before you start.
#   bash scripts/tiny_reference.sh                   # into results/, then results/reference/
#   bash scripts/tiny_reference.sh --from-reference  # on a fresh machine, resume the suite from the committed records
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
FROM=()
if [ "${1:-}" = "--from-reference" ]; then FROM=(--from-reference); fi
bash scripts/tiny_seeds.sh "${FROM[@]}"
# ROC: the null models are built once (two threads, with WatermarkDM's verifications), then the other methods'
# verifications in two one-thread workers (each writes roc/<model>_<method>.csv), then the tables from all of them
# ROC_ATTACKS="permute merge ..." limits the attacked checkpoints to those attacks (bench.tools.roc --attack): a
# machine whose cache lacks some runs' checkpoints (records resumed --from-reference) measures what it has.
ROC_ARGS=()
for a in ${ROC_ATTACKS:-}; do ROC_ARGS+=(--attack "$a"); done
roc() { .venv/bin/python -m bench.tools.roc results "${ROC_ARGS[@]}" "$@"; }
OMP_NUM_THREADS=2 roc --method watermarkdm
OMP_NUM_THREADS=1 roc --method activemark --method aiao > "${TMPDIR:-/tmp}/tiny_roc_a.log" 2>&1 & a=$!
OMP_NUM_THREADS=1 roc --method roma --method sleepermark > "${TMPDIR:-/tmp}/tiny_roc_b.log" 2>&1 & b=$!
wait "$a"; wait "$b"
roc --tables-only
bash scripts/tiny_search.sh
bash scripts/tiny_disputes.sh
bash scripts/publish.sh results
