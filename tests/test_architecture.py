"""The house keeps its shape: `lint-imports` checks the layers and the no-cycle contracts in pyproject.toml."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(config: Path | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    args = [exe, "--no-cache"] + (["--config", str(config)] if config else [])
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_layers_and_no_cycles_hold():
    proc = _lint_imports()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "2 kept, 0 broken" in proc.stdout


def test_an_import_up_the_floors_is_caught(tmp_path):
    """The contract is not vacuous: the same layers with the kernel placed above the tools are broken."""
    text = (ROOT / "pyproject.toml").read_text()
    broken = text.replace('    "bench.tools | bench.__main__",\n', "").replace(
        '    "bench.errors",\n]', '    "bench.errors",\n    "bench.tools | bench.__main__",\n]')
    assert broken != text
    config = tmp_path / "pyproject.toml"
    config.write_text(broken)
    proc = _lint_imports(config)
    assert proc.returncode != 0 and "BROKEN" in proc.stdout, proc.stdout[-2000:]
