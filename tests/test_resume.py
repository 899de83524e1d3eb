"""A run killed with SIGKILL mid-attack resumes and yields the same record as an uninterrupted one;
the same config and seed give the same record twice (CPU)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from tests.helpers import ROOT, SHRINK, bench_cli, records, values

# A longer attack than the other tests use, so that there is time to kill it mid-way; four checkpoints (the
# default dense schedule would evaluate 13, which only makes the test slower).
RUN = ["method=watermarkdm", "attack=full_ft", "attack.steps=100", "attack.schedule=[0,20,50,100]", "-m", *SHRINK]


def _wait_for_attack_tmp(cache, proc, timeout=600) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if list((cache / "attack").glob(".*.tmp-*/ckpt/step-0000020.safetensors")):
            return True
        time.sleep(0.2)
    return False


def test_sigkill_mid_attack_resumes_to_identical_record(shared_cache, tmp_path):
    # Uninterrupted reference run (shares world and embedding with the other tests).
    reference = tmp_path / "reference"
    bench_cli(RUN, reference, shared_cache, check=True)
    (ref,) = records(reference).values()

    # Fresh cache holding only the world and the embedding: the attack must run again.
    cache = tmp_path / "cache"
    for stage in ("world", "embed"):
        shutil.copytree(shared_cache / stage, cache / stage)
    results = tmp_path / "killed"
    cmd = [sys.executable, "-m", "bench", *[a for a in RUN if a != "-m"], f"paths.results_dir={results}",
           f"paths.cache_dir={cache}", "-m"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert _wait_for_attack_tmp(cache, proc), "the attack never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)

    # Killed: no record, no finished attack artifact, only an orphaned temporary folder.
    assert records(results) == {}
    assert not [p for p in (cache / "attack").iterdir() if p.is_dir() and not p.name.startswith(".")]

    bench_cli(RUN, results, cache, check=True)
    (resumed,) = records(results).values()
    assert resumed["status"] == "complete"
    assert resumed["timings"]["embed"]["built"] is False  # resumed after the last finished stage
    assert values(resumed) == values(ref)  # same config + seed -> same record, kill or no kill
    assert resumed["curves"] == ref["curves"]


def test_a_run_held_by_another_process_is_skipped_and_taken_up_once_free(shared_cache, tmp_path):
    """Two workers of one sweep walk the same job list (scripts/tiny_seeds.sh): a run another process holds is
    skipped, not waited for or done twice, and the sweep exits 0; once free, the run is done. The lock is held
    here by this test process, as a second worker would hold it."""
    from filelock import FileLock

    from bench.identity import plan
    from bench.sweep.outcome import sweep_outcomes
    from bench.tools.search import composed

    run = ["method=watermarkdm", "attack=full_ft", "-m", *SHRINK]  # test_end_to_end's run: its stages are cached
    results = tmp_path / "results"
    rid = plan(*composed([a for a in run if a != "-m"] + [f"paths.results_dir={results}"]))["run_id"]
    (results / "records" / ".running").mkdir(parents=True)
    with FileLock(str(results / "records" / ".running" / f"{rid}.lock")):
        proc = bench_cli(run, results, shared_cache)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert records(results) == {} and f"{rid} is running in another process; skipped" in proc.stdout + proc.stderr
        (sweep,) = (results / "hydra").iterdir()
        assert [o["status"] for o in sweep_outcomes(sweep)] == ["elsewhere"]
    bench_cli(run, results, shared_cache, check=True)
    assert records(results)[rid]["status"] == "complete"
    assert not (results / "records" / ".running").exists()  # the run's own lock left nothing behind


def test_a_suite_resumed_from_committed_reference_records_skips_what_is_published(shared_cache, tmp_path):
    """scripts/resume_from_reference.py copies back only the committed records of the shipped build from a clean
    commit, and `python -m bench` then skips those runs (the copied record is kept, not rewritten)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import make_reference
    import resume_from_reference
    from bench.record import write_record

    run = ["method=watermarkdm", "attack=prune", "-m", *SHRINK]
    bench_cli(run, tmp_path / "first", shared_cache, check=True)
    ((rid, rec),) = records(tmp_path / "first").items()
    shipped = json.loads((ROOT / "bench/world/tiny_world/manifest.json").read_text())["fingerprint"]
    ref = tmp_path / "reference"
    published = make_reference.slim(rec)
    published["provenance"] = {**rec["provenance"], "world_fingerprint": shipped, "git_dirty": False,
                                "git_commit": "0" * 40}
    published.pop("record_version")
    write_record(ref / "records" / rid / "record.json", published)
    other = {**published, "run_id": rid + "-other",
             "provenance": {**published["provenance"], "world_fingerprint": "another-build"}}
    write_record(ref / "records" / (rid + "-other") / "record.json", other)
    dirty = {**published, "run_id": rid + "-dirty", "provenance": {**published["provenance"], "git_dirty": True}}
    write_record(ref / "records" / (rid + "-dirty") / "record.json", dirty)

    resumed = tmp_path / "resumed"
    assert resume_from_reference.main([str(resumed), "--reference", str(ref)]) == 1
    assert set(records(resumed)) == {rid}
    proc = bench_cli(run, resumed, shared_cache, check=True)
    assert "is complete; nothing to do" in proc.stdout + proc.stderr
    again = records(resumed)[rid]
    assert again["provenance"]["git_commit"] == "0" * 40 and "lmc" not in again.get("curves", {})
    assert resume_from_reference.main([str(resumed), "--reference", str(ref)]) == 0
