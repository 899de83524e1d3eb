"""One self-describing `record.json` per run: status, metrics, curves, config and provenance."""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from bench.cache import write_json_atomic
from bench.identity import RECORD_VERSION

PACKAGES = ("torch", "diffusers", "transformers", "hydra-core", "torchmetrics", "clean-fid", "peft", "safetensors",
            "submitit", "wandb", "lifelines")


def git_commit() -> str | None:
    """The commit of the harness's checkout (None outside a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def provenance() -> dict:
    """Package versions, git commit, host, torch's CPU thread count (a record reproduces bit for bit only at the
    same thread count) and SLURM job id when running under SLURM."""
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"versions": versions, "python": platform.python_version(), "git_commit": git_commit(),
            "host": platform.node(), "torch_threads": _torch_threads(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID")}


def _torch_threads() -> int | None:
    """torch's intra-op thread count, if torch is already imported (this module does not import it)."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def record_path(records_dir: Path, rid: str) -> Path:
    return Path(records_dir) / rid / "record.json"


def read_record(path: Path) -> dict | None:
    """The record at `path`, or None if there is none."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def load_records(results_or_records: Path) -> list[dict]:
    """Every record under `<folder>/records` (or `<folder>` itself if it holds run folders), one per run id,
    oldest first (the newest file wins for a run id)."""
    folder = Path(results_or_records)
    if (folder / "records").is_dir():
        folder = folder / "records"
    records = {}
    for path in sorted(folder.glob("*/record.json"), key=lambda p: p.stat().st_mtime):
        rec = json.loads(path.read_text())
        records[rec["run_id"]] = rec
    return list(records.values())


def write_record(path: Path, record: dict) -> None:
    """Write atomically: a reader sees the old record or the new one, never half of one."""
    write_json_atomic(path, {"record_version": RECORD_VERSION, **record})
