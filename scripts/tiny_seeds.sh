#!/usr/bin/env bash
# The five-seed tiny-world suite on a 2-core machine: two workers, one thread each (OMP_NUM_THREADS=1;
# with default threads two jobs on two cores run many times slower than one), seeds split between them.
# Jobs share results/cache (a file lock per artifact), so each embedding and null attack is built once;
# a killed run resumes from its cached stages. Extra arguments are passed to every `python -m bench`.
#   bash scripts/tiny_seeds.sh                       # the README's tables (hours of CPU)
#   bash scripts/tiny_seeds.sh paths.results_dir=/tmp/r
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
worker() {  # worker SEEDS...: the whole suite (conf/experiment/tiny_suite.yaml: every method x attack) at these seeds
  local seeds; seeds=$(IFS=,; echo "$*")
  OMP_NUM_THREADS=1 .venv/bin/python -m bench experiment=tiny_suite seed="$seeds" "${EXTRA[@]}" -m || true
}
EXTRA=("$@")
worker 0 2 4 > "${TMPDIR:-/tmp}/tiny_seeds_a.log" 2>&1 &
worker 1 3 > "${TMPDIR:-/tmp}/tiny_seeds_b.log" 2>&1 &
wait
.venv/bin/python -m bench.tools.leaderboard "$(.venv/bin/python - "${EXTRA[@]}" <<'PY'
import sys
print(next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("paths.results_dir=")), "results"))
PY
)"
