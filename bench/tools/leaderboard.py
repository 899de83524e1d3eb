"""Aggregate a results folder into its leaderboard (`bench.analysis.leaderboard`) and print it.

    python -m bench.tools.leaderboard [RESULTS_DIR] [--skip-bad] [--allow-mixed-builds] [--logger NAME]

Writes leaderboard.csv / .md, survival.md, the plots and report.html into RESULTS_DIR (each file atomically)
and prints the two markdown tables; `--logger wandb` also logs the leaderboard with conf/logger/NAME.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.analysis.leaderboard import log_to_logger, write_leaderboard
from bench.errors import BenchError, ConfigError
from bench.tools.cli import command


def user_logger(name: str, results_dir: Path):
    """conf/logger/NAME.yaml, composed for `results_dir` (None for `none`); an unknown name is one paragraph."""
    from bench.config import compose
    from bench.untrusted import registry
    known = sorted(set(registry("logger").values()) | {"none"})
    if name not in known:
        raise ConfigError(f"--logger {name!r} is not one of conf/logger/ ({', '.join(known)}).")
    if name == "none":
        return None
    return compose([f"logger={name}", f"paths.results_dir={results_dir}"]).logger


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", nargs="?", default="results", help="folder holding records/ (default: results)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="leave out (and list) files under records/ that are not readable records, instead of "
                             "refusing the folder")
    parser.add_argument("--allow-mixed-builds", action="store_true",
                        help="pool seeds run on different builds of their world in one row (refused by default); the "
                             "tables then name those rows")
    parser.add_argument("--logger", default="none", help="also log the leaderboard with conf/logger/NAME (e.g. wandb)")
    args = parser.parse_args(argv)
    folder = Path(args.results_dir)
    logger = user_logger(args.logger, folder)
    if not folder.is_dir():
        raise BenchError(f"Results folder '{folder}' does not exist. Give the folder a sweep wrote (it holds "
                         "records/), e.g. python -m bench.tools.leaderboard results")
    write_leaderboard(folder, require_records=True, skip_bad=args.skip_bad, allow_mixed_builds=args.allow_mixed_builds)
    print((folder / "leaderboard.md").read_text())
    if (folder / "survival.md").is_file():
        print((folder / "survival.md").read_text())
    log_to_logger(logger, folder)
    return 0


main = command(_main)

if __name__ == "__main__":
    sys.exit(main())
