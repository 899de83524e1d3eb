#!/usr/bin/env bash
# The worst case per method on the tiny world (docs/methods.md, "The worst-case attacker"): one search of N trials per
# (method, attack family), each best configuration re-run at five fresh seeds, then the worst-case table
# (results/search/worst_case.md). Two one-thread workers on 2 cores walk the same (method, family) list: a search the
# other worker is running is refused (its folder's lock) and skipped, a re-run's runs the other holds are skipped
# (bench.record.claimed); searches and runs resume from their storage and cached stages when killed. Extra arguments
# go to every search and re-run.
#   bash scripts/tiny_search.sh                                   # N=12, full_ft and lora_ft, the five methods
#   N=2 METHODS=roma FAMILIES=full_ft bash scripts/tiny_search.sh debug=micro paths.results_dir=/tmp/s   # a smoke run
#   N=20 FAMILIES="full_ft lora_ft partial_ft erase_recover" bash scripts/tiny_search.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
N=${N:-12}
FAMILIES=${FAMILIES:-"full_ft lora_ft"}
read -r -a METHODS <<< "${METHODS:-activemark aiao roma sleepermark watermarkdm}"
EXTRA=("$@")
worker() {  # every (method, family) search, each followed by its fresh-seed re-run
  for method in "${METHODS[@]}"; do
    for family in $FAMILIES; do
      OMP_NUM_THREADS=1 .venv/bin/python -m bench.tools.search "$family" "method=$method" --trials "$N" "${EXTRA[@]}" || continue
      rerun=$(.venv/bin/python - "$family" "$method" "${EXTRA[@]}" <<'PY'
import json, shlex, sys
from bench.config import compose
cfg = compose([f"method={sys.argv[2]}", *sys.argv[3:]])
best = json.load(open(f"{cfg.paths.results_dir}/search/{sys.argv[2]}-{sys.argv[1]}-s{cfg.seed}/best.json"))
print(" ".join(shlex.quote(a) for a in shlex.split(best["rerun"])[1:]) if best.get("rerun") else "")
PY
)
      [ -n "$rerun" ] && eval "OMP_NUM_THREADS=1 .venv/bin/python $rerun" || true
    done
  done
}
worker > "${TMPDIR:-/tmp}/tiny_search_a.log" 2>&1 &
sleep 5  # the first worker takes the first search; the second starts at the next
worker > "${TMPDIR:-/tmp}/tiny_search_b.log" 2>&1 &
wait
results=$(.venv/bin/python -c 'import sys; from bench.config import compose; print(compose(sys.argv[1:]).paths.results_dir)' "${EXTRA[@]}")
.venv/bin/python -m bench.tools.search --summary "$results"
