"""The content-addressed cache: builds once, atomically, under a lock shared by processes."""
from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest

from bench.cache import Cache, address_of


def test_address_depends_on_stage_version_and_key():
    a = address_of("embed", "1", {"lr": 1e-3, "steps": 10})
    assert a == address_of("embed", "1", {"steps": 10, "lr": 1e-3})  # key order does not matter
    assert a != address_of("embed", "2", {"lr": 1e-3, "steps": 10})
    assert a != address_of("attack", "1", {"lr": 1e-3, "steps": 10})
    assert a != address_of("embed", "1", {"lr": 1e-4, "steps": 10})


def test_builds_once_then_hits(tmp_path):
    cache, calls = Cache(tmp_path), []

    def build(out: Path) -> None:
        calls.append(out)
        (out / "x.txt").write_text("done")

    first = cache.get_or_build("s", "1", {"k": 1}, build)
    second = cache.get_or_build("s", "1", {"k": 1}, build)
    assert first.built and not second.built and len(calls) == 1
    assert (second.path / "x.txt").read_text() == "done"
    assert (second.path / "key.json").is_file()


def test_failed_build_leaves_nothing(tmp_path):
    cache = Cache(tmp_path)

    def build(out: Path) -> None:
        (out / "half.bin").write_bytes(b"x" * 100)
        raise RuntimeError("killed halfway")

    with pytest.raises(RuntimeError):
        cache.get_or_build("s", "1", {"k": 2}, build)
    leftovers = [p for p in (tmp_path / "s").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def _slow_build(root: str, counter: str) -> None:
    def build(out: Path) -> None:
        with open(counter, "a") as f:
            f.write("built\n")
        time.sleep(1.0)
        (out / "v").write_text("1")

    Cache(root).get_or_build("s", "1", {"shared": True}, build)


def test_concurrent_processes_build_once(tmp_path):
    counter = tmp_path / "count.txt"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_slow_build, args=(str(tmp_path / "c"), str(counter))) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert counter.read_text().count("built") == 1


def test_sweep_stale_removes_orphaned_temporaries(tmp_path):
    cache = Cache(tmp_path)
    orphan = tmp_path / "s" / f".{'a' * 64}.tmp-deadbeef"
    orphan.mkdir(parents=True)
    (orphan / "partial").write_text("x")
    assert cache.sweep_stale() == 1 and not orphan.exists()
