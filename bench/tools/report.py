"""Write a results folder's HTML report (`bench.analysis.report`) and print its path.

    python -m bench.tools.report [RESULTS_DIR] [--skip-bad]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.analysis.report import write_report
from bench.errors import BenchError
from bench.record import load_records
from bench.tools.cli import command


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", nargs="?", default="results", help="folder holding records/ (default: results)")
    parser.add_argument("--skip-bad", action="store_true", help="leave out (and name) files that are not records")
    args = parser.parse_args(argv)
    folder = Path(args.results_dir)
    if not folder.is_dir():
        raise BenchError(f"Results folder '{folder}' does not exist. Give the folder a sweep wrote (it holds "
                         "records/), e.g. python -m bench.tools.report results")
    print(write_report(folder, load_records(folder, skip_bad=args.skip_bad)))
    return 0


main = command(_main)

if __name__ == "__main__":
    sys.exit(main())
