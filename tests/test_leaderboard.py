"""The leaderboard aggregates any records folder, failed runs included, one row per model x method x attack."""
from __future__ import annotations

import subprocess
import sys

import pandas as pd

from bench.leaderboard import write_leaderboard
from bench.record import write_record
from tests.helpers import ROOT


def _record(results, method, attack, seed, status="complete", bit_acc=None, curve=None, removal=None):
    rid = f"micro-{method}-{attack}-s{seed}-00000000"
    rec = {"run_id": rid, "model": "micro", "method": method, "attack": attack, "seed": seed, "status": status}
    if status == "complete":
        rec["metrics"] = {"verify/attacked/bit_acc": {"value": bit_acc, "higher_is_better": True},
                          "fid/watermarked": {"value": 10.0 + seed, "higher_is_better": False},
                          "survived_attack": {"value": removal is None, "higher_is_better": True},
                          "removal_budget": {"value": removal, "higher_is_better": True}}
        rec["curves"] = {"robustness": curve or [{"step": 0, "bit_acc": 1.0}, {"step": 10, "bit_acc": bit_acc}]}
    else:
        rec["error"] = "RuntimeError: out of memory"
    write_record(results / "records" / rid / "record.json", rec)


def test_rows_means_and_failed_runs(tmp_path):
    _record(tmp_path, "watermarkdm", "full_ft", 0, bit_acc=0.6)
    _record(tmp_path, "watermarkdm", "full_ft", 1, bit_acc=0.8)
    _record(tmp_path, "none", "full_ft", 0, status="failed")
    df = write_leaderboard(tmp_path)
    assert len(df) == 2
    wm = df[df.method == "watermarkdm"].iloc[0]
    assert wm["status"] == "complete" and wm["n_seeds"] == 2
    assert abs(wm["verify/attacked/bit_acc"] - 0.7) < 1e-9 and abs(wm["fid/watermarked"] - 10.5) < 1e-9
    failed = df[df.method == "none"].iloc[0]
    assert failed["status"] == "failed" and "out of memory" in failed["error"]
    on_disk = pd.read_csv(tmp_path / "leaderboard.csv")
    assert list(on_disk.method) == ["none", "watermarkdm"]
    assert (tmp_path / "robustness_micro_full_ft.png").stat().st_size > 1000


def test_standalone_command(tmp_path):
    _record(tmp_path, "watermarkdm", "none", 0, bit_acc=1.0)
    out = subprocess.run([sys.executable, "-m", "bench.leaderboard", str(tmp_path)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "watermarkdm" in out.stdout
    assert (tmp_path / "leaderboard.md").is_file()


def test_survival_matrix(tmp_path):
    """Attacks x methods: survives / removed at the budget (string budgets too) / seeds that disagree."""
    _record(tmp_path, "watermarkdm", "full_ft", 0, bit_acc=0.5, removal=10)
    _record(tmp_path, "watermarkdm", "quantize", 0, bit_acc=0.6, removal="int8")
    _record(tmp_path, "aiao", "full_ft", 0, bit_acc=0.9)
    _record(tmp_path, "aiao", "quantize", 0, bit_acc=0.9)
    _record(tmp_path, "aiao", "quantize", 1, bit_acc=0.5, removal="fp16")
    write_leaderboard(tmp_path)
    text = (tmp_path / "survival.md").read_text()
    rows = {line.split("|")[2].strip(): line for line in text.splitlines()[2:]}
    assert "removed at 10 (0.50)" in rows["full_ft"] and "survives (0.90)" in rows["full_ft"]
    assert "removed at int8 (0.60)" in rows["quantize"] and "survives 1/2 seeds (0.70)" in rows["quantize"]


def test_sweep_outcomes_summary_and_exit_status(tmp_path):
    """The launching process adopts its jobs' outcome files: counts, exit status, one line per bad job
    (also when a job left no error text)."""
    from bench import outcome
    outcome.write_outcome(tmp_path / "0", "complete", "run-a")
    outcome.write_outcome(tmp_path / "1", "failed", "run-b", "")
    outcome.write_outcome(tmp_path / "2", "refused", None, "attack.steps must be at least 1\nmore")
    summary = outcome.adopt_sweep(tmp_path)
    assert summary.splitlines() == ["2 of 3 jobs did not complete:", "  job 1: failed run-b: ",
                                    "  job 2: refused : attack.steps must be at least 1"]
    assert outcome.exit_status() == 2
    outcome.adopt_sweep(tmp_path / "empty")
    assert outcome.exit_status() == 0
