#!/usr/bin/env bash
# Create .venv and install the harness on first use; later calls return at once unless
# pyproject.toml changed. Used by scripts/run.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ -f "$stamp" ]; then
  exit 0
fi
echo "setup: creating .venv and installing the harness (first run: a few minutes, ~6 GB with torch)" >&2
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch + torchvision from PyPI: the CPU-only torch wheel has no matching torchvision build,
# and clean-fid imports torchvision. The PyPI (CUDA) build runs on a CPU-only machine too.
.venv/bin/python -m pip install -q -e ".[test]"
rm -f .venv/.installed-*
touch "$stamp"
echo "setup: done" >&2
