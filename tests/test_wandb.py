"""logger=wandb (offline): a run per job and a leaderboard run, read back from the .wandb files."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from wandb.proto import wandb_internal_pb2 as pb

from tests.helpers import ROOT, SHRINK, bench_cli, records

RUN = ["method=watermarkdm", "attack=full_ft", "logger=wandb", "logger.group=wbtest", "-m", *SHRINK]


def read_wandb(path: Path) -> list:
    """The protobuf records of an offline `.wandb` file (wandb's LevelDB-log framing, 32 KiB blocks)."""
    data, pos, buf, out = path.read_bytes(), 7, b"", []  # 7 bytes: ':W&B' header
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # block trailer padding
            pos += 32768 - pos % 32768
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk  # 1 full, 2 first, 3 middle, 4 last
        if kind in (1, 4):
            out.append(pb.Record.FromString(buf))
    return out


def runs(results: Path) -> list[dict]:
    """Every offline run under results/wandb: group, job type, name, summary and history (flat keys), artifacts."""
    found = []
    for path in sorted((results / "wandb").glob("wandb/offline-run-*/*.wandb")):
        run = {"dir": path.parent, "summary": {}, "history": {}, "artifacts": []}
        for rec in read_wandb(path):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                run.update(group=rec.run.run_group, job_type=rec.run.job_type, name=rec.run.display_name)
            elif kind == "summary":
                run["summary"].update({u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in rec.summary.update})
            elif kind == "history":
                run["history"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
            elif kind == "artifact":
                run["artifacts"].append((rec.artifact.type, rec.artifact.name))
        found.append(run)
    return found


@pytest.fixture(scope="module")
def logged(shared_cache, tmp_path_factory):
    results = tmp_path_factory.mktemp("wandb_results")
    bench_cli(RUN, results, shared_cache, check=True)
    return results


def test_job_run_has_metrics_curves_and_samples(logged):
    (rec,) = records(logged).values()
    (job,) = [r for r in runs(logged) if r["job_type"] == "run"]
    assert job["group"] == "wbtest" and job["name"] == "watermarkdm-full_ft-s0"
    for name, m in rec["metrics"].items():
        if m["value"] is not None:
            assert job["summary"][name] == pytest.approx(m["value"]), name
    assert job["summary"]["status"] == "complete"
    files = job["dir"] / "files"
    table = json.loads((files / job["summary"]["robustness/table/path"]).read_text())
    assert [row[0] for row in table["data"]] == [p["step"] for p in rec["curves"]["robustness"]]
    assert (files / job["summary"]["lmc/wm_to_attacked/table/path"]).is_file()
    image = files / job["summary"]["samples/path"]
    assert image.suffix == ".png" and image.stat().st_size > 0  # base / watermarked / attacked rows


def test_leaderboard_run_from_sweep_and_standalone(logged):
    boards = [r for r in runs(logged) if r["job_type"] == "leaderboard"]
    assert len(boards) == 1 and boards[0]["group"] == "wbtest"
    table = json.loads((boards[0]["dir"] / "files" / boards[0]["summary"]["leaderboard/path"]).read_text())
    row = dict(zip(table["columns"], table["data"][0]))
    assert (row["model"], row["method"], row["attack"], row["status"]) == ("micro", "watermarkdm", "full_ft", "complete")
    assert ("leaderboard", "leaderboard-wbtest") in boards[0]["artifacts"]

    import subprocess
    import sys
    # the standalone command logs only with the user's own --logger, never with a logger a record names
    subprocess.run([sys.executable, "-m", "bench.tools.leaderboard", str(logged)], cwd=ROOT, check=True, capture_output=True)
    assert len([r for r in runs(logged) if r["job_type"] == "leaderboard"]) == 1
    subprocess.run([sys.executable, "-m", "bench.tools.leaderboard", str(logged), "--logger", "wandb"], cwd=ROOT, check=True,
                   capture_output=True)
    assert len([r for r in runs(logged) if r["job_type"] == "leaderboard"]) == 2
