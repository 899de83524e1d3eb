"""Test helpers: the real Hydra config, composed and shrunk to the micro world's CPU budget.

Tests never keep their own copies of configs: they compose `conf/` and override sizes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.config import compose

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

MICRO = ["model=micro", "data=micro"]   # the default world is the tiny one; tests use the micro world
# The micro world at test size (conf/debug/micro.yaml): a few seconds per stage on 2 CPU cores.
SHRINK = [
    "debug=micro",
    # extra overrides for a whole test run, e.g. BENCH_TEST_OVERRIDES="model.train_precision=bf16" runs the
    # micro tests with bf16 autocast (tests/test_precision.py measures how far that is from fp32)
    *os.environ.get("BENCH_TEST_OVERRIDES", "").split(),
]


def compose_cfg(overrides: list[str]):
    """The real config with `overrides` (Hydra's compose API, no app run)."""
    return compose(overrides)


def run_module(module: str, argv: list[str], *, cwd: Path = ROOT, env: dict | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGV` in a forked child of the test process: the same `__main__` code path, argv, exit status,
    stdout and stderr as a fresh interpreter, without paying its imports again (torch, diffusers and the runner
    take ~7 s per process on 2 cores; a refusal takes well under one once they are loaded). For the many tests that
    check a command refuses bad input; a test of a full run uses `bench_cli`'s real subprocess.

    The child runs torch on one thread (forking after OpenMP's pool started is safe only then), clears Hydra's
    global state, and leaves with os._exit so that no pytest machinery runs twice."""
    import runpy
    import signal
    import tempfile
    import time
    import traceback

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
                os.chdir(cwd)
                if env is not None:
                    os.environ.clear()
                    os.environ.update(env)
                if "torch" in sys.modules:
                    sys.modules["torch"].set_num_threads(1)
                from hydra.core.global_hydra import GlobalHydra
                GlobalHydra.instance().clear()
                sys.argv = [module, *argv]
                runpy.run_module(module, run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as exit_:
                if isinstance(exit_.code, int) or exit_.code is None:
                    code = exit_.code or 0
                else:
                    print(exit_.code, file=sys.stderr)
            except BaseException:  # noqa: BLE001  (the child reports every failure as a process would)
                traceback.print_exc()
            finally:
                for stream in (sys.stdout, sys.stderr):
                    stream.flush()
                os._exit(code)
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise subprocess.TimeoutExpired([module, *argv], timeout)
            time.sleep(0.05)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess([sys.executable, "-m", module, *argv], os.waitstatus_to_exitcode(status),
                                           out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def bench_cli(args: list[str], results: Path, cache: Path | None = None, timeout: int = 900,
              check: bool = False, fork: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m bench ARGS` with results (and optionally the cache) in the given folders: in a new
    interpreter, or with `fork=True` in a forked child of this one (`run_module`: for refusals, no import cost)."""
    overrides = [f"paths.results_dir={results}"] + ([f"paths.cache_dir={cache}"] if cache else [])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    flags = [a for a in args if a.startswith("-")]  # argparse wants options after all overrides
    argv = [a for a in args if not a.startswith("-")] + overrides + flags
    if fork:
        proc = run_module("bench", argv, env=env, timeout=timeout)
    else:
        proc = subprocess.run([sys.executable, "-m", "bench", *argv], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"bench exited {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-4000:]}")
    return proc


def failing_attack(folder: Path) -> str:
    """A test-only `attack=huge` (full_ft with an impossible batch, so it fails at runtime, after the
    config is accepted) in `folder/conf`; returns the override that adds it to Hydra's search path."""
    (folder / "conf" / "attack").mkdir(parents=True, exist_ok=True)
    (folder / "conf" / "attack" / "huge.yaml").write_text("defaults:\n  - full_ft\n  - _self_\n"
                                                         "batch_size: 1000000000000\n")
    return f"hydra.searchpath=[file://{folder / 'conf'}]"


def records(results: Path) -> dict[str, dict]:
    """The records under `results/records`, by run id."""
    out = {}
    for path in (Path(results) / "records").glob("*/record.json"):
        rec = json.loads(path.read_text())
        out[rec["run_id"]] = rec
    return out


def values(record: dict) -> dict:
    """A record's metric values only (what must be identical across identical runs)."""
    return {k: m["value"] for k, m in record["metrics"].items() if k != "embed_seconds"}
