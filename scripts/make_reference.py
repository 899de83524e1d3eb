"""Write results/reference/ from a finished results folder: the slimmed records and the tables.

    .venv/bin/python scripts/make_reference.py [RESULTS_DIR]

Each record keeps its status, identity, versions, metrics, config, provenance, key and models, and
of its curves only the robustness curve without per-query scores (what the leaderboard reads); the
leaderboard (CSV, markdown), survival table and, when RESULTS_DIR/roc exists, the ROC summary are
aggregated from those slim records, so `tests/test_reference.py` can check that re-aggregating
them reproduces the committed files.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.leaderboard import write_leaderboard  # noqa: E402
from bench.record import load_records, write_record  # noqa: E402

KEEP = ("leaderboard.csv", "leaderboard.md", "survival.md", "leaderboard_meta.json")


def slim(record: dict) -> dict:
    """The record without the curves the tables do not read (and without per-query scores)."""
    out = {k: v for k, v in record.items() if k not in ("curves", "traceback")}
    robustness = record.get("curves", {}).get("robustness")
    if robustness is not None:
        out["curves"] = {"robustness": [{k: v for k, v in p.items() if k != "scores"} for p in robustness]}
    return out


def main() -> None:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
    ref = Path(__file__).resolve().parents[1] / "results" / "reference"
    shutil.rmtree(ref / "records", ignore_errors=True)
    for rec in load_records(source):
        if rec["status"] == "complete":
            write_record(ref / "records" / rec["run_id"] / "record.json", slim(rec))
    scratch = ref / ".build"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(ref / "records", scratch / "records")
    write_leaderboard(scratch)
    for name in KEEP:
        shutil.copy(scratch / name, ref / name)
    if (source / "roc" / "roc_summary.csv").is_file():
        for name in ("roc_summary.csv", "roc_summary.md"):
            shutil.copy(source / "roc" / name, ref / name)
    shutil.rmtree(scratch)
    print(f"wrote {ref}: {len(list((ref / 'records').glob('*/record.json')))} records")


if __name__ == "__main__":
    main()
