"""bench.roc on the micro world: the cross-key matrix, independent nulls, ROC summary and the refusal of a
folder without seeds."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from bench.roc import roc_points, tpr_at
from tests.helpers import ROOT, SHRINK, bench_cli

K = 3


@pytest.fixture(scope="module")
def roc_run(shared_cache, tmp_path_factory):
    results = tmp_path_factory.mktemp("roc")
    bench_cli(["method=watermarkdm", "attack=full_ft", "attack.steps=1", f"seed={','.join(map(str, range(K)))}",
               "-m", *SHRINK, "~metrics.fid", "~metrics.clip_score", "~metrics.lmc"], results, shared_cache, check=True)
    out = subprocess.run([sys.executable, "-m", "bench.roc", str(results), "--independent", "1", "--indep-steps", "3",
                          "--other-worlds", "1"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    return results, out


def test_cross_key_matrix_has_k_times_k_minus_1_entries(roc_run):
    results, _ = roc_run
    rows = pd.read_csv(results / "roc" / "micro_watermarkdm.csv")
    cross = rows[rows.role.str.startswith("cross:")]
    # each of the K keys on the K - 1 other seeds' watermarked models, and on their attacked models
    assert (cross.role == "cross:watermarked").sum() == K * (K - 1)
    assert (cross.role == "cross:attacked").sum() == K * (K - 1)
    assert len(set(zip(cross.key_seed, cross.model))) == len(cross)  # no pair counted twice
    own = rows[rows.role == "watermarked"]
    assert len(own) == K and own.positive.all() and not rows[~rows.positive].positive.any()
    kinds = set(rows[~rows.positive].role)
    assert {"independent", "independent+full_ft", "independent+distill", "other-world", "other-world+full_ft",
            "base"} <= kinds


def test_summary_reports_auc_tpr_and_fpr_interval(roc_run):
    results, out = roc_run
    summary = pd.read_csv(results / "roc" / "roc_summary.csv")
    row = summary[(summary.method == "watermarkdm") & (summary.positives == "watermarked")].iloc[0]
    assert row.n_pos == K and row.n_null >= K * (K - 1) * 2 + K * 7
    assert 0 <= row.auc <= 1 and 0 <= row.fpr_ci_low <= row.fpr <= row.fpr_ci_high <= 1
    assert (results / "roc" / "roc_micro_watermarkdm.png").stat().st_size > 1000
    assert "auc" in out.stdout


def test_roc_helpers_by_hand():
    pos, neg = np.array([3.0, 5.0]), np.array([1.0, 2.0, 4.0, 0.5])
    pts = roc_points(pos, neg)
    assert list(zip(pts.fpr, pts.tpr))[-1] == (1.0, 1.0) and (0.25, 0.5) in list(zip(pts.fpr, pts.tpr))
    assert tpr_at(pos, neg, 0.25) == 1.0   # one null of four may exceed the threshold: 2, which 3 and 5 exceed
    assert tpr_at(pos, neg, 0.0) == 0.5    # no null may: the threshold is the largest null, 4; only 5 exceeds it


def test_no_seeds_refused(tmp_path):
    (tmp_path / "records").mkdir()
    out = subprocess.run([sys.executable, "-m", "bench.roc", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2 and "two or more seeds" in out.stderr
