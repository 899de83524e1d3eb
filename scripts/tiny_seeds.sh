#!/usr/bin/env bash
# The five-seed tiny-world suite on a 2-core machine: two workers, one thread each (OMP_NUM_THREADS=1;
# with default threads two jobs on two cores run many times slower than one). Both walk the whole job list;
# a run the other worker holds is skipped (a lock per run: bench.record.claimed), so the two share the work
# evenly and none is done twice. Jobs share results/cache (a file lock per artifact), so each embedding and
# null attack is built once; a killed run resumes from its cached stages. Extra arguments are passed to every
# `python -m bench`. The suite runs one attack at a time, every method x seed of it (a column of the tables), the
# README's headline attacks and the cheap weight edits first (FIRST below), then the other conf/attack/ files: a
# suite stopped half way leaves whole columns to publish, not scattered cells.
#   bash scripts/tiny_seeds.sh                       # the README's tables (hours of CPU)
#   bash scripts/tiny_seeds.sh paths.results_dir=/tmp/r
#   bash scripts/tiny_seeds.sh --from-reference      # on a fresh machine: first copy the committed records of the
#                                                    # shipped build back (scripts/resume_from_reference.py), so the
#                                                    # runs already published are skipped
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# every conf/method/ as the experiment's glob finds it, the watermarks first and `none` (the utility reference) last
# (a method= among the extra arguments replaces this list)
METHODS=""
for f in conf/method/*.yaml; do m=$(basename "$f" .yaml); [ "$m" = none ] || METHODS="$METHODS$m,"; done
METHODS="${METHODS}none"
# then the other weight edits: no training, so whole columns land fast, and `noise` is the uninformed-degradation
# line the strength-against-utility figures draw
FIRST="full_ft lora_ft trigger_ft permute merge noise prune quantize"
ATTACKS="$FIRST"
for f in conf/attack/*.yaml; do a=$(basename "$f" .yaml); [ "$a" = none ] || [[ " $FIRST " == *" $a "* ]] || ATTACKS="$ATTACKS $a"; done
worker() {  # worker NAME ATTACK: one column of the suite (conf/experiment/tiny_suite.yaml) at the five seeds,
  # in a sweep folder of its own (two sweeps started in the same second would share one)
  OMP_NUM_THREADS=1 .venv/bin/python -m bench experiment=tiny_suite "method=$METHODS" "attack=$2" seed=0,1,2,3,4 \
    "hydra.sweep.dir=\${paths.results_dir}/hydra/\${now:%Y-%m-%d_%H-%M-%S}-$1-$2" "${EXTRA[@]}" -m || true
}
FROM_REFERENCE=0
if [ "${1:-}" = "--from-reference" ]; then FROM_REFERENCE=1; shift; fi
EXTRA=("$@")
RESULTS=$(.venv/bin/python - "${EXTRA[@]}" <<'PY'
import sys
print(next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("paths.results_dir=")), "results"))
PY
)
[ "$FROM_REFERENCE" = 0 ] || .venv/bin/python scripts/resume_from_reference.py "$RESULTS"
walk() {  # walk NAME: every column in order; no barrier between columns: a worker done with its share of one column
  # starts the next while the other finishes its last run
  for attack in $ATTACKS; do
    echo "tiny_seeds: worker $1, attack $attack ($(date -u +%H:%M:%S))"
    worker "$1" "$attack"
  done
}
walk a >> "${TMPDIR:-/tmp}/tiny_seeds_a.log" 2>&1 &
sleep 5  # the first worker takes the first job; the second starts at the next
walk b >> "${TMPDIR:-/tmp}/tiny_seeds_b.log" 2>&1 &
wait
.venv/bin/python -m bench.tools.leaderboard "$RESULTS"
