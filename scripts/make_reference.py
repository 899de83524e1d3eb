"""Write results/reference/ from a finished results folder: the slimmed records and the tables.

    .venv/bin/python scripts/make_reference.py [RESULTS_DIR]          # replace the reference records
    .venv/bin/python scripts/make_reference.py --add [RESULTS_DIR]    # add RESULTS_DIR's records to them

Each record keeps its status, identity, versions, metrics, config, provenance, key and models, and
of its curves only the robustness and utility curves without per-query scores (what the leaderboard
and its plots read). The leaderboard (CSV, markdown) and survival table are aggregated from those
slim records, so `tests/test_reference.py` can check that re-aggregating them reproduces the
committed files. When RESULTS_DIR/roc exists (`python -m bench.roc`), it is copied to
results/reference/roc/ as it is: its models are not in the records, so it cannot be re-aggregated.
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
    """The record without the curves the tables and the robustness plots do not read (LMC), and without
    per-query scores: the robustness and utility curves stay."""
    out = {k: v for k, v in record.items() if k not in ("curves", "traceback")}
    curves = {name: [{k: v for k, v in p.items() if k != "scores"} for p in record.get("curves", {})[name]]
              for name in ("robustness", "utility") if record.get("curves", {}).get(name) is not None}
    if curves:
        out["curves"] = curves
    return out


def main() -> None:
    args = sys.argv[1:]
    add = "--add" in args
    args = [a for a in args if a != "--add"]
    source = Path(args[0] if args else "results")
    ref = Path(__file__).resolve().parents[1] / "results" / "reference"
    if not add:
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
    if (source / "roc" / "roc_summary.csv").is_file():  # the ROC measurement (its models stay in the cache)
        shutil.rmtree(ref / "roc", ignore_errors=True)
        shutil.copytree(source / "roc", ref / "roc")
    shutil.rmtree(scratch)
    print(f"wrote {ref}: {len(list((ref / 'records').glob('*/record.json')))} records")


if __name__ == "__main__":
    main()
