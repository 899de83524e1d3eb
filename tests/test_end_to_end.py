"""`python -m bench` on the micro world: records, verdicts, metrics, caching, re-runs, sweeps."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from tests.helpers import ROOT, SHRINK, bench_cli, failing_attack, records, values

RUN = ["method=watermarkdm", "attack=full_ft", "-m", *SHRINK]


@pytest.fixture(scope="module")
def first_run(shared_cache, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    proc = bench_cli(RUN, results, shared_cache, check=True)
    return results, proc


def test_record_has_verdicts_and_all_metrics(first_run, shared_cache):
    results, _ = first_run
    (rec,) = records(results).values()
    assert rec["status"] == "complete", rec.get("error")
    m = {k: v["value"] for k, v in rec["metrics"].items()}
    assert m["verify/watermarked/p_value"] < 1e-3 and m["verify/watermarked/detected"]
    assert not m["verify/null_base/detected"] and not m["verify/null_attacked/detected"]
    assert m["false_positives"] == 0
    for key in ("fid/base", "fid/watermarked", "fid/attacked", "clip_score/watermarked",
                "lmc/wm_to_attacked/watermark_barrier", "lmc/wm_to_attacked/task_barrier",
                "lmc/base_to_wm/watermark_barrier", "steps_to_removal", "embed_seconds"):
        assert key in m, key
    assert all(rec["metrics"][k]["higher_is_better"] in (True, False, None) for k in m)
    assert m["fid/watermarked"] > 0 and m["lmc/wm_to_attacked/task_barrier"] >= 0
    steps = [p["step"] for p in rec["curves"]["robustness"]]
    assert steps == [0, 1, 2, 3, 5, 7, 10, 15, 20, 30, 50]  # the shared dense schedule, up to the micro budget
    assert len(rec["curves"]["lmc/wm_to_attacked"]["task"]) == 5
    # provenance
    assert rec["provenance"]["versions"]["torch"] and rec["config"]["seed"] == 0
    # which build of the world: sha256 over the built world's weight files, computed here by hand
    prints = set()
    for folder in (shared_cache / "world").glob("*/pipeline"):
        digest = hashlib.sha256()
        for path in sorted(folder.rglob("*.safetensors")):
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
        prints.add(digest.hexdigest()[:16])
    assert rec["provenance"]["world_fingerprint"] in prints
    assert set(rec["timings"]) == {"world", "embed", "attack", "evaluate"}
    # each stage's CPU time (all the run's threads: core-seconds) beside its wall time; suite_cost counts by it
    for stage in rec["timings"].values():
        assert 0 <= stage["cpu_seconds"] <= stage["seconds"] * (os.cpu_count() or 1) + 1, stage
    assert 0 < rec["timings"]["evaluate"]["cpu_seconds"] and "null_cpu_seconds" in rec["timings"]["attack"]


def test_leaderboard_row_written(first_run):
    results, proc = first_run
    df = pd.read_csv(results / "leaderboard.csv")
    row = df[(df.method == "watermarkdm") & (df.attack == "full_ft")]
    assert len(row) == 1 and row.iloc[0]["status"] == "complete"
    assert "verify/attacked/bit_acc" in df.columns and "fid/watermarked" in df.columns
    assert (results / "leaderboard.md").read_text().count("watermarkdm") == 1
    assert "leaderboard:" in proc.stdout


def test_rerun_does_no_work(first_run, shared_cache):
    results, _ = first_run
    (path,) = list((results / "records").glob("*/record.json"))
    before = path.read_text()
    # the cache's finished entries and when each last changed. Other xdist workers add entries to the shared cache
    # meanwhile (CI once failed on a neighbour's temp file here), so the check is that this re-run rewrote none of
    # the entries it needs and built nothing (its own log), not that the whole folder stood still
    def finished_entries():
        return {p: p.stat().st_mtime_ns for p in shared_cache.glob("*/*")
                if not p.name.endswith(".lock") and ".tmp-" not in p.name}
    entries = finished_entries()
    proc = bench_cli(RUN, results, shared_cache, check=True)
    assert "nothing to do" in proc.stdout + proc.stderr
    assert "embed watermarkdm" not in proc.stderr and "attack full_ft" not in proc.stderr  # no training bars
    assert "built " not in proc.stdout + proc.stderr
    assert path.read_text() == before
    after = finished_entries()
    assert {p: after.get(p) for p in entries} == entries


def test_new_results_folder_reuses_every_stage(first_run, shared_cache, tmp_path):
    """Same config, other results folder: every stage and metric is a cache hit, same numbers."""
    results, _ = first_run
    proc = bench_cli(RUN, tmp_path, shared_cache, check=True)
    (old,), (new,) = records(results).values(), records(tmp_path).values()
    assert values(old) == values(new)
    assert not any(t.get("built") for t in new["timings"].values())
    assert "built " not in proc.stdout + proc.stderr


def test_sweep_embeds_each_method_once(first_run, shared_cache, tmp_path):
    proc = bench_cli(["method=none,watermarkdm", "attack=none,full_ft", "-m", *SHRINK], tmp_path, shared_cache,
                     check=True)
    recs = records(tmp_path)
    assert len(recs) == 4 and all(r["status"] == "complete" for r in recs.values())
    marked = {r["key"]["folder"].split("/embed/")[1].split("/")[0] for r in recs.values() if r["method"] == "watermarkdm"}
    # what this sweep built itself (its own log: other xdist workers write into the same shared cache meanwhile):
    # at most WatermarkDM's one embedding, for both attacks
    built = re.findall(r"built embed/(\w+)", proc.stdout + proc.stderr)
    assert len(marked) == 1 and len(built) <= 1 and all(next(iter(marked)).startswith(b) for b in built)
    df = pd.read_csv(tmp_path / "leaderboard.csv")
    assert len(df) == 4 and set(df.method) == {"none", "watermarkdm"}
    none_row = df[(df.method == "none") & (df.attack == "full_ft")].iloc[0]
    assert pd.isna(none_row.get("verify/watermarked/bit_acc"))  # nothing to verify without a watermark
    marked = [r for r in recs.values() if r["method"] == "watermarkdm" and r["attack"] == "none"][0]
    assert marked["metrics"]["verify/attacked/detected"]["value"] is True
    assert "Launching 4 jobs" in proc.stdout + proc.stderr


def test_sweep_with_a_failing_job_exits_1_and_keeps_the_others(first_run, shared_cache, tmp_path):
    """One job fails at runtime: its record says failed, the other completes, the leaderboard has both,
    and the sweep exits 1 naming the failed job."""
    args = ["method=none", "attack=none,huge", failing_attack(tmp_path), "-m", *SHRINK]
    proc = bench_cli(args, tmp_path / "results", shared_cache)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "1 of 2 jobs did not complete" in proc.stderr and "failed" in proc.stderr
    status = {r["attack"]: r["status"] for r in records(tmp_path / "results").values()}
    assert status == {"none": "complete", "huge": "failed"}  # the YAML's name, not its parent's
    df = pd.read_csv(tmp_path / "results" / "leaderboard.csv").set_index("attack")
    assert df.loc["none", "status"] == "complete" and df.loc["huge", "status"] == "failed"


def test_local_launcher_runs_jobs_in_other_processes_and_reports_failures(first_run, shared_cache, tmp_path):
    """`hydra/launcher=local` (submitit, one process per job): records from both jobs, and the failed one
    reaches the launching process's exit status through the jobs' outcome files."""
    args = ["method=none", "attack=none,huge", failing_attack(tmp_path), "hydra/launcher=local",
            "hydra.launcher.cpus_per_task=1", "-m", *SHRINK]
    proc = bench_cli(args, tmp_path / "results", shared_cache)
    assert proc.returncode == 1 and "1 of 2 jobs did not complete" in proc.stderr, proc.stderr[-3000:]
    recs = records(tmp_path / "results").values()
    assert {r["attack"]: r["status"] for r in recs} == {"none": "complete", "huge": "failed"}  # the YAML's name, not its parent's
    assert len(list((tmp_path / "results" / "submitit").rglob("*_log.out"))) == 2  # each job had its own process


def test_text_encoder_attack_runs_end_to_end(first_run, shared_cache, tmp_path):
    """full_ft with the text encoder trained too: every collector evaluates the checkpoints (with their text
    encoder) and the record is complete, with a different attacked model than the UNet-only attack."""
    proc = bench_cli(["method=watermarkdm", "attack=full_ft", "attack.train_text_encoder=true", "-m", *SHRINK],
                     tmp_path, shared_cache, check=True)
    (rec,) = records(tmp_path).values()
    assert rec["status"] == "complete" and rec["config"]["attack"]["train_text_encoder"] is True
    assert len(rec["curves"]["lmc/wm_to_attacked"]["task"]) == rec["config"]["metrics"]["lmc"]["points"]
    assert "fid/attacked" in rec["metrics"] and "verify/attacked/bit_acc" in rec["metrics"]
    (plain,) = records(first_run[0]).values()  # the same run with the UNet-only attack
    assert rec["curves"]["lmc/wm_to_attacked"]["task"][-1] != plain["curves"]["lmc/wm_to_attacked"]["task"][-1]
    assert rec["curves"]["lmc/base_to_wm"] == plain["curves"]["lmc/base_to_wm"]  # same watermarked model
    assert "built attack/" in proc.stdout + proc.stderr


def test_record_states_the_commit_its_code_ran_with(tmp_path):
    """A sweep imports its code once and runs for hours; a `git pull` meanwhile moves HEAD but not the code already
    imported. The record must name the commit at import, not HEAD when it is written, and must not call itself clean
    once the checkout changed (code imported later, a method's module, may come from the new state): a real git
    checkout of the harness's package, provenance() before and after a commit and an edit, in one process."""
    repo = tmp_path / "checkout"
    shutil.copytree(ROOT / "bench", repo / "bench", ignore=shutil.ignore_patterns("__pycache__", "tiny_world"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "first"], cwd=repo, check=True)
    first = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    script = (f"import subprocess, json; import bench.record as r; before = r.provenance(); "
              f"subprocess.run({git!r} + ['commit', '-q', '--allow-empty', '-m', 'later'], check=True); "
              f"open('bench/errors.py', 'a').write('# edited'); "
              f"print(json.dumps([before, r.provenance()]))")
    out = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(repo)})
    assert out.returncode == 0, out.stderr
    later = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    before, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert before["git_commit"] == first and before["git_dirty"] is False and "git_checkout_now" not in before
    assert later != first and after["git_commit"] == first and after["git_dirty"] is None
    assert after["git_checkout_now"] == {"git_commit": later, "git_dirty": True}
