#!/usr/bin/env bash
# Ownership disputes on the tiny world, 5 seeds (docs/methods.md "Ownership disputes"): two one-thread workers
# (OMP_NUM_THREADS=1) walking the same runs (a run the other holds is skipped), sharing results/cache (a killed run resumes from its cached
# stages; the suite's embeddings of the same methods and seeds are reused).
#   1. permute and the three chains against the white-box marks (AIAO, ActiveMark), verified with and without the
#      owner's alignment (metrics.verification.align=none,activations; FID and utility are computed once per model);
#   2. bench.tools.dispute on every method with five seeds: false claims at B = 1, 10, 100 with and without
#      commitment, collusion at K = 2, 4, dual claims by a pirate of the same method and of WatermarkDM;
#   3. bench.tools.roc --align: the null models' false-positive rates with alignment, beside the unaligned ones.
#   Steps 2 and 3 also run as two one-thread workers, split by method, and are then put together from the cache.
# Extra arguments are passed to every `python -m bench` (e.g. paths.results_dir=/tmp/r).
#   bash scripts/tiny_disputes.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
EXTRA=("$@")
RESULTS=$(.venv/bin/python - "${EXTRA[@]}" <<'PY'
import sys
print(next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("paths.results_dir=")), "results"))
PY
)
bench() {  # one sweep, in a folder of this worker's own (two sweeps started in the same second would share one)
  OMP_NUM_THREADS=1 .venv/bin/python -m bench "$@" "hydra.sweep.dir=\${paths.results_dir}/hydra/\${now:%Y-%m-%d_%H-%M-%S}-$W" \
    "${EXTRA[@]}" -m || true
}
worker() {  # worker SEEDS: the permutation and chain runs at these seeds (W names the worker)
  bench method=aiao,activemark attack=permute metrics.verification.align=none,activations seed="$1"
  bench method=aiao,activemark attack=chain 'attack.links=[permute,full_ft],[permute,lora_ft],[lora_ft,permute]' \
    metrics.verification.align=none,activations seed="$1"
  bench method=watermarkdm,roma,sleepermark attack=none metrics=verification seed="$1"  # keys for the dispute tool
}
W=a worker 0,1,2,3,4 > "${TMPDIR:-/tmp}/tiny_disputes_a.log" 2>&1 &
sleep 5; W=b worker 0,1,2,3,4 > "${TMPDIR:-/tmp}/tiny_disputes_b.log" 2>&1 &
wait
dispute() { .venv/bin/python -m bench.tools.dispute "$RESULTS" --budgets 1,10,100 --collusion 2,4 --dual same,watermarkdm "$@"; }
# The methods' forgeries, pirate embeddings and averages in two one-thread workers (two one-thread processes do more
# per core than one two-thread process on these small models; the split balances the pirates' embedding seconds);
# each writes dispute/ for its own methods, then one pass over every method reads them all back from the cache
# (a re-run with every verdict cached takes seconds) and writes the tables of all five.
OMP_NUM_THREADS=1 dispute --method aiao --method sleepermark > "${TMPDIR:-/tmp}/tiny_dispute_tool_a.log" 2>&1 & a=$!
OMP_NUM_THREADS=1 dispute --method roma --method watermarkdm --method activemark > "${TMPDIR:-/tmp}/tiny_dispute_tool_b.log" 2>&1 & b=$!
wait "$a"; wait "$b"
OMP_NUM_THREADS=2 dispute
# ROC with alignment: one method per worker (the null models are the unaligned ROC's, already cached), then the tables
ROC_ARGS=()  # ROC_ATTACKS: as in scripts/tiny_reference.sh
for a in ${ROC_ATTACKS:-}; do ROC_ARGS+=(--attack "$a"); done
roc() { .venv/bin/python -m bench.tools.roc "$RESULTS" --align "${ROC_ARGS[@]}" "$@"; }
OMP_NUM_THREADS=1 roc --method aiao > "${TMPDIR:-/tmp}/tiny_roc_align_a.log" 2>&1 & a=$!
OMP_NUM_THREADS=1 roc --method activemark > "${TMPDIR:-/tmp}/tiny_roc_align_b.log" 2>&1 & b=$!
wait "$a"; wait "$b"
.venv/bin/python -m bench.tools.roc "$RESULTS" --align --tables-only  # --attack chose the models; the tables read the rows
