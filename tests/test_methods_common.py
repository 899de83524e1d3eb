"""What every watermarking method must satisfy, and the false-positive measurement over keys."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.run.runner import build
from bench.stats import summarise
from tests.helpers import CONF, ROOT, SHRINK, compose_cfg

METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml") if p.stem != "none")


def test_every_method_is_configured():
    assert {"watermarkdm", "roma", "aiao", "sleepermark", "activemark"} <= set(METHODS)


@pytest.mark.parametrize("name", METHODS)
def test_unmarked_model_is_at_chance(micro_world, name):
    """The base model never saw the key: no verifier may call it watermarked."""
    method = build(compose_cfg([*SHRINK, f"method={name}"]).method, "method")
    if method.key_from_embedding:
        pytest.skip(f"{name}'s key is completed by embedding; its own tests check the base model")
    key = method.make_key(7, micro_world)
    key.meta["seed"] = 7
    s = summarise(method.verify(micro_world, micro_world.unet, key, 4, seed=3), target_fpr=1e-3)
    assert not s["detected"] and s["p_value"] > 1e-3
    if s["bit_acc"] is not None:
        assert 0.25 < s["bit_acc"] < 0.75
    else:
        assert s["verification_rate"] <= 0.25


def test_fpr_script_measures_null_models(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bench.tools.fpr", "method=watermarkdm", "n_keys=3", *SHRINK,
                          "attack.steps=2", f"paths.results_dir={tmp_path}"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "fpr" / "micro-watermarkdm-full_ft.json").read_text())
    assert set(result["summary"]) == {"base", "base+full_ft"}
    assert len(result["per_key"]) == 6 and {r["key_seed"] for r in result["per_key"]} == {1000, 1001, 1002}
    for s in result["summary"].values():
        assert s["n_keys"] == 3 and 0 <= s["fpr"] <= 1 and 0 < s["mean_bit_acc"] < 1
    assert "3 keys" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "bench.tools.fpr", "method=none", *SHRINK, f"paths.results_dir={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "no verifier" in bad.stderr and "Traceback" not in bad.stderr
