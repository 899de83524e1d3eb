#!/usr/bin/env bash
# Ownership disputes on the tiny world, 5 seeds (docs/methods.md "Ownership disputes"): two one-thread workers
# (OMP_NUM_THREADS=1) walking the same runs (a run the other holds is skipped), sharing results/cache (a killed run resumes from its cached
# stages; the suite's embeddings of the same methods and seeds are reused).
#   1. permute and the three chains against the white-box marks (AIAO, ActiveMark), verified with and without the
#      owner's alignment (metrics.verification.align=none,activations; FID and utility are computed once per model);
#   2. bench.tools.dispute on every method with five seeds: false claims at B = 1, 10, 100 with and without
#      commitment, collusion at K = 2, 4, dual claims by a pirate of the same method and of WatermarkDM;
#   3. bench.tools.roc --align: the null models' false-positive rates with alignment, beside the unaligned ones.
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
OMP_NUM_THREADS=2 .venv/bin/python -m bench.tools.dispute "$RESULTS" --budgets 1,10,100 --collusion 2,4 \
  --dual same,watermarkdm
OMP_NUM_THREADS=2 .venv/bin/python -m bench.tools.roc "$RESULTS" --align --method aiao --method activemark
