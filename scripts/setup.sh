#!/usr/bin/env bash
# Create .venv and install the harness on first use; later calls return at once unless
# pyproject.toml changed. Used by scripts/run.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}

# The tiny world (the default model) is trained on Fashion-MNIST from the Debian package.
# Install it where we can (root on Debian/Ubuntu); elsewhere the harness's error says what to do.
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup: installing Debian package dataset-fashion-mnist (tiny-world training data)" >&2
  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 ||
   { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }) ||
    echo "setup: could not install dataset-fashion-mnist; install it or set model.data_root (see README)" >&2
fi
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
