#!/usr/bin/env bash
# The main job: set up on first use, then `python -m bench ARGS` (results in ./results).
#   bash scripts/run.sh method=watermarkdm attack=full_ft -m
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m bench "$@"
