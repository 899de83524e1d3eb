"""One self-describing `record.json` per run: status, metrics, curves, config and provenance."""
from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import platform
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from bench.cache import write_json_atomic
from bench.errors import BenchError, ConfigError
from bench.identity import RECORD_VERSION
from bench.untrusted import parse_record, read_json

log = logging.getLogger(__name__)

PACKAGES = ("torch", "diffusers", "transformers", "hydra-core", "torchmetrics", "clean-fid", "peft", "safetensors",
            "submitit", "wandb", "scipy")  # scipy.stats: the p-values and intervals


def git_commit() -> str | None:
    """The commit of the harness's checkout (None outside a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


CODE = ("bench", "methods", "attacks", "conf", "scripts", "pyproject.toml")  # what decides a record's numbers


def git_dirty() -> bool | None:
    """Whether the checkout's code (CODE: tracked files changed, staged or not) differs from its commit; None outside a
    git checkout. Published records come from a clean tree (scripts/make_reference.py refuses the others)."""
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE], cwd=root,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


@functools.cache
def checkout_at_start() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout when this process first asked: at its first run, right after that run's
    components were imported. A sweep runs for hours in one process; a `git pull` or an edit meanwhile changes HEAD
    and the tree but not the code already imported, so a record names this commit, never HEAD when it is written."""
    return git_commit(), git_dirty()


def checkout() -> dict:
    """`git_commit` and `git_dirty` of the code this process runs: the state at its first run (`checkout_at_start`);
    if the checkout has changed since, a clean start becomes `git_dirty: None` (unknown: methods and attacks imported
    for later runs may come from either state; scripts/make_reference.py refuses it) and `git_checkout_now` names the
    new state."""
    start = checkout_at_start()
    now = (git_commit(), git_dirty())
    if now == start:
        return {"git_commit": start[0], "git_dirty": start[1]}
    return {"git_commit": start[0], "git_dirty": None if start[1] is False else start[1],
            "git_checkout_now": {"git_commit": now[0], "git_dirty": now[1]}}


def provenance() -> dict:
    """Package versions, git commit and dirtiness of the code this process runs (`checkout()`), host, torch's
    CPU thread count (a record reproduces bit for bit only at the same thread count) and SLURM job id when running
    under SLURM. Called when a run starts, after its components are built (imported)."""
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"versions": versions, "python": platform.python_version(), **checkout(),
            "host": platform.node(), "torch_threads": _torch_threads(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID")}


def _torch_threads() -> int | None:
    """torch's intra-op thread count, if torch is already imported (this module does not import it)."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def record_path(records_dir: Path, rid: str) -> Path:
    return Path(records_dir) / rid / "record.json"


@contextmanager
def claimed(records_dir: Path, rid: str):
    """Yield True while this process holds run `rid` (a lock under `records_dir/.running/`), False without waiting
    if another process holds it. Two workers of one sweep (scripts/tiny_seeds.sh) then walk the same job list
    and each takes the next run the other is not doing: the load balances itself, and no run is done twice. The
    operating system drops the lock of a killed process, so a killed run is taken up again."""
    folder = Path(records_dir) / ".running"
    made_records_dir = not folder.parent.exists()  # removed again if still empty: a refused run writes nothing
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / f"{rid}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
        try:  # leave no lock files behind (a refused run writes nothing). A process that opened the file just
            # before this may still lock the unlinked file and run the job too: harmless, one record per run id.
            os.unlink(lock.lock_file)
            folder.rmdir()
            if made_records_dir:
                folder.parent.rmdir()  # only if empty (no record was written)
        except OSError:
            pass


def read_record(path: Path) -> dict | None:
    """The record at `path`, or None if there is none, or if it is not a record this harness can read (a run
    whose own record is damaged is re-run, which rewrites it; the reason is logged)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return parse_record(read_json(path, "The record", "It is re-run and rewritten."), str(path))
    except ConfigError as err:
        log.warning("%s", err)
        return None


class BadRecords(BenchError):
    """Records under a results folder that this harness cannot read (each named, with the fix)."""


def scan_records(results_or_records: Path) -> tuple[list[dict], list[tuple[Path, str]]]:
    """(records, bad): every readable record under `<folder>/records` (or `<folder>` itself if it holds run
    folders), one per run id, oldest first (the newest file wins for a run id), and (path, reason) of each file
    that is not a record this harness can read (`bench.untrusted.parse_record`). A record's run id must be the
    name of its own folder: one file can never stand in for another run."""
    folder = Path(results_or_records)
    if (folder / "records").is_dir():
        folder = folder / "records"
    records, bad = {}, []
    paths = [p for p in folder.glob("*/record.json")]
    for path in sorted(paths, key=lambda p: (p.stat().st_mtime if p.exists() else 0, str(p))):
        try:
            rec = parse_record(read_json(path, "The record", "Move it out of the records folder."), str(path))
            if rec["run_id"] != path.parent.name:
                raise ConfigError(f"The record {path} names run {rec['run_id']!r}, not its folder's "
                                  f"{path.parent.name!r}: a record describes the run of its own folder. Move it "
                                  "out of the records folder.")
        except ConfigError as err:
            bad.append((path, str(err)))
            continue
        records[rec["run_id"]] = rec
    return list(records.values()), bad


def load_records(results_or_records: Path, skip_bad: bool = False) -> list[dict]:
    """The records of `scan_records`, the bad files handled by `refuse_bad`."""
    records, bad = scan_records(results_or_records)
    refuse_bad(bad, skip_bad)
    return records


def refuse_bad(bad: list[tuple[Path, str]], skip_bad: bool) -> None:
    """Refuse the files that are not readable records (`BadRecords`, naming each), or with `skip_bad` warn about
    each one."""
    if bad and not skip_bad:
        listed = " ".join(f"({i + 1}) {why}" for i, (_, why) in enumerate(bad[:5]))
        more = f" ... and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise BadRecords(f"{len(bad)} file(s) under the records folder are not records this harness can aggregate, "
                         f"so nothing was written: {listed}{more} Fix or remove them, or pass --skip-bad to "
                         "aggregate the other records and list these.")
    for path, why in bad:
        log.warning("skipped %s: %s", path, why)


def write_record(path: Path, record: dict) -> None:
    """Write atomically: a reader sees the old record or the new one, never half of one."""
    write_json_atomic(path, {"record_version": RECORD_VERSION, **record})
