"""Sweeps through `hydra/launcher=slurm` on the local one-node cluster (scripts/slurm_local.sh start):
SLURM job ids in records, one build per shared stage under concurrent jobs, requeue/preemption
resumes to the same record, and a failed job still leaves a leaderboard.

Part of the default run (`bash scripts/test.sh`); skipped, with the reason, when the local cluster
is not running. `.ci/run` starts it first."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

from tests.helpers import ROOT, SHRINK, bench_cli, failing_attack, records, values


LOCAL = Path(os.environ.get("SLURM_LOCAL_DIR", "/tmp/slurm_local"))  # where scripts/slurm_local.sh keeps its state


def _alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def _why_not() -> str | None:
    """None if the SLURM tests can run, else why they are skipped. They submit only to the local one-node
    cluster of scripts/slurm_local.sh (never to a real cluster that `sinfo` happens to reach), unless
    BENCH_SLURM_TESTS=any."""
    start = "start it with `bash scripts/slurm_local.sh start` (root, Debian)"
    if os.environ.get("BENCH_SLURM_TESTS") != "any" and not _alive(LOCAL / "slurmctld.pid"):
        return f"the local one-node SLURM cluster is not running: {start}"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as err:
        return f"`sinfo` cannot run ({err}): {start}"
    if out.returncode != 0 or not any(s.startswith(("idle", "mix", "alloc")) for s in out.stdout.split()):
        return f"`sinfo` reaches no usable node ({(out.stderr or out.stdout).strip()[:200]}): {start}"
    return None


WHY_NOT = _why_not()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(WHY_NOT is not None, reason=f"no SLURM: {WHY_NOT}")]

# Small jobs that fit the local node (CPUs only, memory not a consumable resource there).
SLURM = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=120"]
# two array tasks sharing the world and the embedding (a 2 x 2 sweep with method=none took 4 more minutes of CI)
SWEEP = ["method=watermarkdm", "attack=none,full_ft", "-m", *SHRINK, *SLURM]
ONE = ["method=watermarkdm", "attack=full_ft", "-m", *SHRINK, *SLURM]


def finished(cache: Path, stage: str) -> list[Path]:
    return [p for p in (cache / stage).iterdir() if p.is_dir() and not p.name.startswith(".")]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The 1 x 2 sweep, two array tasks launched at once on one fresh cache."""
    results = tmp_path_factory.mktemp("slurm_sweep")
    proc = bench_cli(SWEEP, results, results / "cache", timeout=3600, check=True)
    return results, proc


def test_sweep_records_carry_slurm_job_ids(sweep):
    results, proc = sweep
    recs = records(results)
    assert len(recs) == 2 and all(r["status"] == "complete" for r in recs.values())
    ids = {r["provenance"]["slurm_job_id"] for r in recs.values()}
    assert None not in ids and len(ids) == 2
    # each job runs the threads its launcher allocated (cpus_per_task=1), not one per core of the node
    assert {r["provenance"]["torch_threads"] for r in recs.values()} == {1}
    df = pd.read_csv(results / "leaderboard.csv")
    assert len(df) == 2 and set(df.status) == {"complete"} and set(df.n_seeds) == {1}
    assert "leaderboard:" in proc.stdout


def test_jobs_request_the_configured_resources(sweep):
    """hydra.launcher.gpus_per_node / cpus_per_task / mem_gb (SLURM above: 0 GPUs, the local node has none) are in
    the sbatch script submitit wrote and in the scheduler's record of the array (right after the sweep ended, well
    within slurmctld's MinJobAge of 300 s)."""
    results, _ = sweep
    (script,) = (results / "slurm").rglob("*_submission.sh")  # the sweep is one array of two tasks
    text = script.read_text()
    for flag in ("--gpus-per-node=0", "--cpus-per-task=1", "--mem=1GB", "--array=0-1%2", "--requeue"):
        assert f"#SBATCH {flag}\n" in text, flag
    job = script.name.split("_")[0]
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, timeout=30).stdout
    cpus, mem = re.findall(r"CPUs/Task=(\S+)", shown), re.findall(r"MinMemoryNode=(\S+)", shown)
    assert cpus and set(cpus) == {"1"} and set(mem) == {"1G"}, shown[-2000:]
    assert "gres/gpu" not in shown


def test_concurrent_jobs_build_each_shared_stage_once(sweep):
    results, _ = sweep
    cache, recs = results / "cache", records(results).values()
    assert len(finished(cache, "world")) == 1 and len(finished(cache, "embed")) == 1
    assert sum(bool(r["timings"]["world"]["built"]) for r in recs) == 1
    assert sum(bool(r["timings"]["embed"]["built"]) for r in recs) == 1
    logs = "".join(p.read_text() for p in (results / "slurm").rglob("*_log.*"))
    assert logs.count("built world/") == 1 and logs.count("built embed/") == 1
    assert not list(cache.glob("*/.*.tmp-*"))  # no half-written artifact left
    for weights in cache.rglob("*.safetensors"):
        load_file(str(weights))  # every artifact reads back


def _job_id(results: Path, timeout: float = 600) -> str:
    """The SLURM id of the single job of the sweep writing into `results` (a one-job array is a plain job)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = [p.name for p in (results / "slurm").glob("*/*") if p.is_dir()]
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError("no SLURM job appeared")


@pytest.mark.parametrize("disturb", [pytest.param(["scancel", "--signal=USR2"], marks=pytest.mark.slow),  # 3 min
                                     ["scontrol", "requeue"]], ids=["preempt-usr2", "scontrol-requeue"])
def test_requeued_job_resumes_to_same_record(sweep, tmp_path, disturb):
    results, _ = sweep
    (ref,) = [r for r in records(results).values() if (r["method"], r["attack"]) == ("watermarkdm", "full_ft")]
    cache = tmp_path / "cache"  # world and embedding only: the attack must run again
    for stage in ("world", "embed"):
        shutil.copytree(results / "cache" / stage, cache / stage)
    out = tmp_path / "results"
    argv = [a for a in ONE if a != "-m"] + [f"paths.results_dir={out}", f"paths.cache_dir={cache}", "-m"]
    proc = subprocess.Popen([sys.executable, "-m", "bench", *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    job = _job_id(out)
    deadline = time.time() + 1800
    while not list((cache / "attack").glob(".*.tmp-*/ckpt/step-0000010.safetensors")):
        assert time.time() < deadline and proc.poll() is None, "the attack never started"
        time.sleep(0.2)
    subprocess.run([*disturb, job], check=True)
    log, _ = proc.communicate(timeout=3600)
    assert proc.returncode == 0, log[-3000:]
    (rec,) = records(out).values()
    assert rec["status"] == "complete" and rec["provenance"]["slurm_job_id"]
    assert values(rec) == values(ref) and rec["curves"] == ref["curves"]
    restarts = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert "Restarts=0" not in restarts  # it really was requeued


def test_failed_job_leaves_leaderboard_with_failed_row(sweep, tmp_path):
    """attack=huge (a test-only config: full_ft with an impossible batch) fails at runtime; the other job completes."""
    results, _ = sweep
    args = ["method=watermarkdm", "attack=none,huge", failing_attack(tmp_path), "-m", *SHRINK, *SLURM]
    proc = bench_cli(args, tmp_path / "results", results / "cache", timeout=3600)
    assert proc.returncode == 1 and "1 of 2 jobs did not complete" in proc.stderr  # the jobs ran elsewhere
    status = {r["attack"]: r["status"] for r in records(tmp_path / "results").values()}
    assert status == {"none": "complete", "huge": "failed"}  # the YAML's name, also in jobs run by SLURM
    df = pd.read_csv(tmp_path / "results" / "leaderboard.csv").set_index("attack")
    assert df.loc["none", "status"] == "complete" and df.loc["huge", "status"] == "failed"
    assert "memory" in df.loc["huge", "error"] or "allocate" in df.loc["huge", "error"]
