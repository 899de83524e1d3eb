"""Content-addressed, atomic, lock-protected storage for stage outputs.

An artifact's address is a hash of the stage name, the stage's code version and the resolved
config of the stage and everything upstream (upstream artifacts enter by their address). The
output is built in a temporary folder beside its final place and renamed into place when
complete, so a killed job never leaves a half-written artifact; a `filelock` per address makes
concurrent jobs (SLURM array tasks sharing a cache) build each artifact once.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)


def address_of(stage: str, version: str, key: Any) -> str:
    """Return the content address (hex sha256) of a stage output for a JSON-able key."""
    blob = json.dumps({"stage": stage, "version": version, "key": key}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class Artifact:
    """A finished stage output: its address, its folder, and whether this call built it."""

    stage: str
    address: str
    path: Path
    built: bool

    @property
    def short(self) -> str:
        return self.address[:12]


class Cache:
    """A folder of finished artifacts, `<root>/<stage>/<address>/`."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path_for(self, stage: str, address: str) -> Path:
        return self.root / stage / address

    def get_or_build(self, stage: str, version: str, key: Any, build: Callable[[Path], None]) -> Artifact:
        """Return the artifact for (stage, version, key), calling `build(tmp_dir)` if it is missing.

        `build` writes everything into the empty folder it is given; only when it returns is
        the folder renamed into place. If it raises, the folder is removed and the error
        propagates.
        """
        address = address_of(stage, version, key)
        final = self.path_for(stage, address)
        if final.is_dir():
            return Artifact(stage, address, final, built=False)
        final.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(final) + ".lock"):
            if final.is_dir():  # another job finished it while we waited
                return Artifact(stage, address, final, built=False)
            tmp = final.parent / f".{address}.tmp-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                (tmp / "key.json").write_text(json.dumps({"stage": stage, "version": version, "key": key},
                                                         indent=1, sort_keys=True, default=str))
                build(tmp)
                os.replace(tmp, final)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        log.info("built %s/%s", stage, address[:12])
        return Artifact(stage, address, final, built=True)

    def get_or_compute_json(self, stage: str, version: str, key: Any, compute: Callable[[], dict]) -> tuple[dict, bool]:
        """Cache a small JSON result (for example one metric of one model); return (value, built)."""
        def build(tmp: Path) -> None:
            write_json_atomic(tmp / "value.json", compute())

        art = self.get_or_build(stage, version, key, build)
        return json.loads((art.path / "value.json").read_text()), art.built

    def sweep_stale(self) -> int:
        """Remove temporary folders left by killed jobs (safe: a live job holds the lock). Return count."""
        removed = 0
        for tmp in self.root.glob("*/.*.tmp-*"):
            address = tmp.name[1:].split(".tmp-")[0]
            lock = FileLock(str(tmp.parent / address) + ".lock")
            try:
                with lock.acquire(timeout=0):
                    shutil.rmtree(tmp, ignore_errors=True)
                    removed += 1
            except Timeout:  # held by a running job: leave it
                continue
        return removed


def link_stages(source: Path, target: Path, stages) -> list[str]:
    """Link (not copy) every finished artifact of `stages` in cache `source` into cache `target`, so a
    scratch cache reuses what is expensive to build (a world) and builds the rest itself. Returns
    "stage/<address prefix>" for each link."""
    linked = []
    for stage in stages:
        (Path(target) / stage).mkdir(parents=True, exist_ok=True)
        for entry in sorted((Path(source) / stage).glob("[0-9a-f]*")):
            if entry.is_dir():
                (Path(target) / stage / entry.name).symlink_to(entry.resolve())
                linked.append(f"{stage}/{entry.name[:12]}")
    return linked


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` when the block completes, removed if it
    raises, so a reader sees the old file or the new one and never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (`atomic_file`)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path, obj: Any, exclusive: bool = False) -> None:
    """Write JSON to `path` through a temporary file and an atomic rename. `exclusive`: `path` must not exist (the
    file is hard-linked into place, so one that appeared meanwhile is never replaced: FileExistsError)."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=str)
    if not exclusive:
        return write_text_atomic(path, text)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:  # the complete file is linked into place (never over another), then its temporary name removed
        tmp.write_text(text)
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def weights_digest(folder: Path) -> str:
    """sha256 (hex) over a folder's `.safetensors` files in path order (a world's fingerprint is its first 16)."""
    return files_digest(folder, sorted(Path(folder).rglob("*.safetensors")))


def files_digest(root: Path, files) -> str:
    """sha256 (hex) over `files` in order: each one's path relative to `root`, then its bytes."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(Path(path).relative_to(root)).encode())
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
