"""Seed a results folder with the committed reference records of the shipped world, so that a suite started on a
fresh machine skips the runs already published (`python -m bench` skips a run whose record is complete).

    .venv/bin/python scripts/resume_from_reference.py [RESULTS_DIR]     # default: results
    ... --reference DIR      # another reference folder (default results/reference)

A long suite (`scripts/tiny_seeds.sh`, hours of CPU) may outlive the machine it runs on; publishing what is done
(`scripts/make_reference.py`) and committing it is what survives. This copies back only records that ran on the
build shipped in `bench/world/tiny_world/` (its fingerprint), from a clean commit, complete, and not already in
RESULTS_DIR/records: records of other builds or dirty trees could not be published again beside the new ones.
A run whose code or config changed since has another run id, so its old record is copied but never read as done.
Each published search's Optuna storage (results/reference/search/<name>/study.db) is copied back where RESULTS_DIR
has none, so `python -m bench.tools.search` goes on from its last finished trial (a finished one only re-writes its
outputs). The stage cache is not in git: a resumed suite rebuilds the embeddings and null attacks its remaining runs need
(deterministic on the CPU for a given thread count).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cache import atomic_file  # noqa: E402
from bench.record import load_records, record_path, write_record  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="?", default="results", type=Path)
    ap.add_argument("--reference", type=Path, default=ROOT / "results" / "reference")
    args = ap.parse_args(argv)
    results = args.results
    shipped = json.loads((ROOT / "bench/world/tiny_world/manifest.json").read_text())["fingerprint"]
    reference = args.reference / "records"
    records = load_records(reference) if reference.is_dir() else []
    copied = other = 0
    for rec in records:
        prov = rec.get("provenance") or {}
        if (rec.get("status") != "complete" or prov.get("world_fingerprint") != shipped
                or prov.get("git_dirty") is not False or not prov.get("git_commit")):
            other += 1
            continue
        dest = record_path(results / "records", rec["run_id"])
        if not dest.exists():
            write_record(dest, {k: v for k, v in rec.items() if k != "record_version"})
            copied += 1
    searches = 0
    for stored in sorted((args.reference / "search").glob("*/study.db")):
        dest = results / "search" / stored.parent.name / "study.db"
        if not dest.exists():  # a search published part way (or finished) resumes from its storage
            with atomic_file(dest) as tmp:
                shutil.copy(stored, tmp)
            searches += 1
    if searches:
        print(f"resume: {searches} search storage(s) copied into {results / 'search'}")
    print(f"resume: {copied} reference record(s) of the shipped build {shipped} copied into {results / 'records'}; "
          f"{len(records) - copied - other} already there; {other} left out (another build, not from a clean "
          "commit, or not complete)")
    return copied


if __name__ == "__main__":
    main()
