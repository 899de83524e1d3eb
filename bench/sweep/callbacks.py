"""The Hydra callback that writes the leaderboard after a run or a sweep (conf/config.yaml).

Its module imports nothing heavy: the leaderboard's own imports (pandas, scipy and
matplotlib) happen only when there is something to aggregate. When no record changed since the
last aggregation (every record is older than `leaderboard_meta.json`, and there are as many), the
existing tables are printed as they are, so re-running a finished sweep takes seconds.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from bench.errors import BenchError
from bench.sweep.outcome import adopt_sweep


def up_to_date(results: Path) -> bool:
    """True when the leaderboard was written after the newest record and counted every record."""
    meta = results / "leaderboard_meta.json"
    if not meta.is_file() or not (results / "leaderboard.md").is_file():
        return False
    paths = list((results / "records").glob("*/record.json"))
    if not paths:
        return False
    newest = max(p.stat().st_mtime for p in paths)
    try:
        counted = json.loads(meta.read_text())
        counted = counted.get("n_records", 0) + len(counted.get("skipped_records", []))
    except (OSError, ValueError, AttributeError, TypeError):
        return False
    return meta.stat().st_mtime >= newest and counted == len(paths)


class LeaderboardCallback(Callback):
    """Rewrite the leaderboard after a run or a sweep and print it.

    (Jobs never raise on failure, they record it, so `on_multirun_end` always runs; the
    standalone `python -m bench.tools.leaderboard` covers sweeps interrupted by other means.)
    """

    def _write(self, config) -> None:
        results = Path(config.paths.results_dir)
        if not up_to_date(results):
            from bench.analysis.leaderboard import write_leaderboard
            try:
                df = write_leaderboard(results, skip_bad=True)  # a bad file is named and left out: runs go on
            except BenchError as err:  # e.g. two variants given one label: the jobs ran, the table is refused
                print(f"\nerror: {err}\n", file=sys.stderr)
                return
            if df.empty:
                return
        print("\n" + (results / "leaderboard.md").read_text())
        print(f"leaderboard: {results / 'leaderboard.csv'}")

    def on_run_end(self, config, **kwargs) -> None:
        self._write(config)

    def on_multirun_end(self, config, **kwargs) -> None:
        self._write(config)
        logger = config.get("logger")
        if logger and "_target_" in logger:
            from bench.analysis.leaderboard import log_to_logger
            log_to_logger(logger, Path(config.paths.results_dir))
        summary = adopt_sweep(config.hydra.sweep.dir)  # the jobs may have run elsewhere (SLURM)
        if summary:
            print("\n" + summary, file=sys.stderr)
