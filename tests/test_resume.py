"""A run killed with SIGKILL mid-attack resumes and yields the same record as an uninterrupted one;
the same config and seed give the same record twice (CPU)."""
from __future__ import annotations

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
