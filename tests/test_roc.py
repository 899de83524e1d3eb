"""bench.tools.roc on the micro world: the cross-key matrix, independent nulls, ROC summary and the refusal of a
folder without seeds."""
from __future__ import annotations

import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from bench.tools.roc import attacked, base_nulls, marked_models, query_calibration, roc_points, tpr_at
from tests.helpers import ROOT, SHRINK, bench_cli, run_module

K = 3  # seeds with an attack; one more seed is a verification-only run without one


@pytest.fixture(scope="module")
def roc_run(shared_cache, tmp_path_factory):
    results = tmp_path_factory.mktemp("roc")
    bench_cli(["method=watermarkdm", "attack=full_ft", "attack.steps=1", f"seed={','.join(map(str, range(K)))}",
               "-m", *SHRINK, "~metrics.fid", "~metrics.clip_score", "~metrics.lmc"], results, shared_cache, check=True)
    # another key from a cheaper run (no attack, verification only): same verification settings, same ROC group
    verify_only = [a for a in SHRINK if not a.startswith(("metrics.fid", "metrics.clip", "metrics.lmc"))]
    bench_cli(["method=watermarkdm", "attack=none", "metrics=verification", f"seed={K}", "-m", *verify_only], results,
              shared_cache, check=True)
    out = subprocess.run([sys.executable, "-m", "bench.tools.roc", str(results), "--independent", "1", "--indep-steps", "3",
                          "--other-worlds", "1", "--cache", str(shared_cache)], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    return results, out


def test_cross_key_matrix_has_k_times_k_minus_1_entries(roc_run):
    results, _ = roc_run
    rows = pd.read_csv(results / "roc" / "micro_watermarkdm.csv")
    cross = rows[rows.role.str.startswith("cross:")]
    # each of the K + 1 keys on the K other seeds' watermarked models, and on the attacked models of the
    # K seeds with an attack other than its own
    assert (cross.role == "cross:watermarked").sum() == (K + 1) * K
    assert (cross.role == "cross:attacked").sum() == K * (K - 1) + K
    assert len(set(zip(cross.key_seed, cross.model))) == len(cross)  # no pair counted twice
    own = rows[rows.role == "watermarked"]
    assert len(own) == K + 1 and own.positive.all() and not rows[~rows.positive].positive.any()
    kinds = set(rows[~rows.positive].role)
    assert {"independent", "independent+full_ft", "independent+distill", "other-world", "other-world+full_ft",
            "base"} <= kinds
    quality = pd.read_csv(results / "roc" / "null_models_micro.csv")
    assert list(quality.role) == ["base", "independent", "other-world"]
    assert (quality.owner_loss > 0).all() and quality.fid.notna().all()


def test_summary_reports_auc_tpr_and_fpr_interval(roc_run):
    results, out = roc_run
    summary = pd.read_csv(results / "roc" / "roc_summary.csv")
    row = summary[(summary.method == "watermarkdm") & (summary.positives == "watermarked")].iloc[0]
    assert row.n_pos == K + 1 and row.n_null >= (K + 1) * K + K * (K - 1) + K + (K + 1) * 7
    assert 0 <= row.auc <= 1 and 0 <= row.fpr_ci_low <= row.fpr <= row.fpr_ci_high <= 1
    assert (results / "roc" / "roc_micro_watermarkdm.png").stat().st_size > 1000
    kinds = pd.read_csv(results / "roc" / "fpr_by_null_kind.csv")
    kinds = kinds[kinds.method == "watermarkdm"]
    assert set(kinds.null_kind) == {"base", "cross", "independent", "other-world"}
    assert kinds.n_null.sum() == row.n_null and kinds.null_detected.sum() == row.null_detected
    assert "auc" in out.stdout


def test_a_cache_without_the_runs_checkpoints_is_refused_before_any_work(roc_run, tmp_path):
    """Records resumed on another machine list checkpoints its cache lacks: one paragraph names the attacks and
    the ways out, before any model is built, and no roc/ folder is written."""
    results, _ = roc_run
    copy = tmp_path / "results"
    shutil.copytree(results / "records", copy / "records")
    out = run_module("bench.tools.roc", [str(copy), "--cache", str(tmp_path / "empty")], timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"full_ft[steps=1]: {2 * K}" in out.stderr and f"watermarked: {K + 1}" in out.stderr and "--attack" in out.stderr and "metrics=verification" in out.stderr
    assert not (copy / "roc").exists()
    out = run_module("bench.tools.roc", [str(copy), "--attack", "lora_ft"], timeout=300)
    assert out.returncode == 2 and "--attack lora_ft" in out.stderr and "full_ft" in out.stderr


def test_attack_filter_keeps_only_the_named_attacks(tmp_path):
    """--attack limits the positives, the cross-key models (marked_models) and the base+attack nulls alike."""
    def rec(attack):
        ckpt = [{"address": "w", "weights": "embed/w.safetensors"}, {"address": f"{attack}@1", "weights": f"attack/{attack}.st"}]
        null = [{"address": "base"}, {"address": f"base-{attack}@1", "weights": f"attack/base-{attack}.st"}]
        return {"identity": {"labels": {"attack": attack}},
                "models": {"watermarked": ckpt[0], "checkpoints": ckpt, "null_checkpoints": null}}

    recs = [rec("full_ft"), rec("permute"), {**rec("none"), "models": {**rec("none")["models"],
                                                                        "checkpoints": rec("none")["models"]["checkpoints"][:1]}}]
    assert [attacked(r, None) for r in recs] == [True, True, False]
    assert [attacked(r, ["permute"]) for r in recs] == [False, True, False]
    variant = {**recs[0], "identity": {"labels": {"attack": "full_ft[steps=1]"}}}
    assert attacked(variant, ["full_ft"]) and attacked(variant, ["full_ft[steps=1]"]) and not attacked(variant, ["lora_ft"])
    cache = SimpleNamespace(root=tmp_path)
    roles = [role for role, _ in marked_models(cache, recs, ["permute"])]
    assert roles == ["watermarked", "attacked:permute"]
    assert [role for role, _ in base_nulls(cache, recs, ["permute"])] == ["base", "base+permute"]
    assert len(marked_models(cache, recs)) == 3 and len(base_nulls(cache, recs)) == 3


def test_roc_helpers_by_hand():
    pos, neg = np.array([3.0, 5.0]), np.array([1.0, 2.0, 4.0, 0.5])
    pts = roc_points(pos, neg)
    assert list(zip(pts.fpr, pts.tpr))[-1] == (1.0, 1.0) and (0.25, 0.5) in list(zip(pts.fpr, pts.tpr))
    assert tpr_at(pos, neg, 0.25) == 1.0   # one null of four may exceed the threshold: 2, which 3 and 5 exceed
    assert tpr_at(pos, neg, 0.0) == 0.5    # no null may: the threshold is the largest null, 4; only 5 exceeds it


def test_query_calibration_by_hand():
    """3 matches in 2 x 16 null queries: rate 3/32, Clopper-Pearson (0.0198, 0.2502), against p0 0.01."""
    neg = pd.DataFrame({"matches": [1, 2], "n_queries": [16, 16], "query_p0": [0.01, 0.01]})
    c = query_calibration(neg)
    assert c["null_query_matches"] == 3 and c["null_queries"] == 32 and c["null_query_rate"] == 3 / 32
    assert c["query_p0"] == 0.01
    assert abs(c["null_query_rate_ci_low"] - 0.01976) < 1e-4 and abs(c["null_query_rate_ci_high"] - 0.25023) < 1e-4
    bits = pd.DataFrame({"matches": [20, 21], "n_queries": [16, 16], "query_p0": [None, None]})
    assert query_calibration(bits) == {}  # bit methods: the voted bits' test is exact, nothing to calibrate


def test_no_seeds_refused(tmp_path):
    (tmp_path / "records").mkdir()
    out = run_module("bench.tools.roc", [str(tmp_path)], timeout=300)
    assert out.returncode == 2 and "two or more seeds" in out.stderr


def test_attack_with_tables_only_is_refused(tmp_path):
    out = run_module("bench.tools.roc", [str(tmp_path), "--tables-only", "--attack", "full_ft"], timeout=300)
    assert out.returncode == 2 and "--tables-only" in out.stderr and "--attack" in out.stderr
    assert not (tmp_path / "roc").exists()


def test_twenty_independent_steps_are_refused_before_any_work(tmp_path):
    """torch's OneCycleLR at the world's 5% warm-up divides by zero at exactly 20 steps; 19 and 21 train."""
    out = run_module("bench.tools.roc", [str(tmp_path), "--indep-steps", "20"], timeout=300)
    assert out.returncode == 2 and "--indep-steps 20" in out.stderr and "19 or 21" in out.stderr
    assert not (tmp_path / "roc").exists()


def test_the_other_world_of_a_shipped_world_is_built_not_refused(tmp_path):
    """model=tiny loads the shipped build of seed 0 and refuses other settings; ROC's other world (seed + 1) asks for a
    build (model.source=build), so world_stage takes the build path: with building not allowed it says the world is
    not in the cache, instead of refusing the seed as the shipped world does."""
    from omegaconf import OmegaConf

    from bench.cache import Cache
    from bench.config import compose
    from bench.errors import ConfigError
    from bench.run.runner import build
    from bench.run.stages import world_stage
    from bench.tools.roc import other_world

    tiny = OmegaConf.to_container(compose(["model=tiny"]).model, resolve=True)
    spec = other_world(tiny, 0)
    assert spec["seed"] == tiny["seed"] + 1 and spec["source"] == "build" and tiny["source"] == "shipped"
    with pytest.raises(ConfigError, match="shipped tiny world was built with other settings"):
        shipped = {**spec, "source": "shipped"}
        world_stage(Cache(tmp_path), build(OmegaConf.create(shipped), "model"), shipped, None, None, allow_build=False)
    with pytest.raises(ConfigError, match="is not in the cache"):
        world_stage(Cache(tmp_path), build(OmegaConf.create(spec), "model"), spec, None, None, allow_build=False)
    assert other_world(OmegaConf.to_container(compose(["model=micro"]).model, resolve=True), 1).get("source") is None
