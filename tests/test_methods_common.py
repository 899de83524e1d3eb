"""The false-positive measurement over many keys (bench.tools.fpr). What every method must satisfy is the plugin
contract's (tests/test_contract.py)."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import ROOT, SHRINK


def test_fpr_script_measures_null_models(tmp_path, shared_cache):
    out = subprocess.run([sys.executable, "-m", "bench.tools.fpr", "method=watermarkdm", "n_keys=3", *SHRINK,
                          "attack.steps=2", f"paths.results_dir={tmp_path}", f"paths.cache_dir={shared_cache}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "fpr" / "micro-watermarkdm-full_ft.json").read_text())
    assert set(result["summary"]) == {"base", "base+full_ft"}
    assert len(result["per_key"]) == 6 and {r["key_seed"] for r in result["per_key"]} == {1000, 1001, 1002}
    for s in result["summary"].values():
        assert s["n_keys"] == 3 and 0 <= s["fpr"] <= 1 and 0 < s["mean_bit_acc"] < 1
    assert "3 keys" in out.stdout
    # every verification is the verification collector's own, built in its cache (3 keys x 2 null models); counted
    # from this process's log, since other test workers write into the same shared cache meanwhile
    assert (out.stdout + out.stderr).count("built verify/") == 6
    bad = subprocess.run([sys.executable, "-m", "bench.tools.fpr", "method=none", *SHRINK, f"paths.results_dir={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "no verifier" in bad.stderr and "Traceback" not in bad.stderr
