"""Write results/reference/ from a finished results folder: the slimmed records and the tables.

    .venv/bin/python scripts/make_reference.py [RESULTS_DIR]          # replace the reference records
    .venv/bin/python scripts/make_reference.py --add [RESULTS_DIR]    # add RESULTS_DIR's records to them
    ... --replace                # also drop published records RESULTS_DIR lacks (refused without it or --add)
    ... --reference DIR          # write DIR instead of results/reference
    ... --allow-mixed-builds     # pool rows whose seeds ran on different world builds (the tables say so)
    ... --allow-unclean          # keep records without a clean commit (refused by default)

Publishing never loses records silently: where RESULTS_DIR lacks records that are published (a fresh results
folder on a new machine, a mistyped path), the replacement is refused, naming them, unless --add or --replace.
Published records come from a clean tree: a record whose `provenance.git_dirty` is not false (a dirty tree, or a
record older than that field) or that has no `git_commit` is refused, naming it, unless --allow-unclean.

Each record keeps its status, identity, versions, metrics, config, provenance, key and models, and
of its curves only the robustness and utility curves without per-query scores (what the leaderboard
and its plots read). The leaderboard (CSV, markdown) and survival table are aggregated from those
slim records, so `tests/test_reference.py` can check that re-aggregating them reproduces the
committed files. When RESULTS_DIR/roc exists (`python -m bench.tools.roc`), it is copied to
results/reference/roc/ as it is: its models are not in the records, so it cannot be re-aggregated; the same for
roc_aligned/ (`--align`) and dispute/ (`python -m bench.tools.dispute`: the README's dispute tables are re-derived
from its raw rows).
Each search in RESULTS_DIR/search/ (`python -m bench.tools.search`), finished or still running, is copied as its
best.json (once finished), trials table, best-so-far figure, exported attack YAML and Optuna storage (study.db, the
resume point; not its trial records); searches published before and absent from RESULTS_DIR stay. With the re-runs'
records, the finished ones are what the worst-case table (`bench.tools.search.worst_case`) is computed from.
"""
from __future__ import annotations

import shutil
import sys
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.analysis.leaderboard import write_leaderboard  # noqa: E402
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


def unclean(records: list[dict]) -> list[str]:
    """Run ids of records not made from a clean commit (dirty tree, unknown state, or no commit)."""
    return [r["run_id"] for r in records
            if (r.get("provenance") or {}).get("git_dirty") is not False or not (r.get("provenance") or {}).get("git_commit")]


def publish_search(search: Path, target: Path) -> None:
    """One search folder, finished or not, as it stands: its summary, trials table, best-so-far figure and exported
    attack YAML where they exist, and its Optuna storage (a consistent copy through SQLite's backup API, even while
    the search writes), so that `scripts/resume_from_reference.py` can resume it on another machine. It replaces
    that search's earlier copy; other searches already published stay."""
    import sqlite3
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for path in [search / n for n in ("best.json", "trials.csv", "trials.md", "best_so_far.png")] + sorted(
            (search / "conf" / "attack").glob("*.yaml")):
        if path.is_file():
            shutil.copy(path, target / path.name)
    with closing(sqlite3.connect(f"file:{search / 'study.db'}?mode=ro", uri=True)) as src, \
            closing(sqlite3.connect(target / "study.db")) as dst:
        src.backup(dst)  # the connections close on leaving (sqlite3's own context manager only commits)


def main(argv: list[str] | None = None) -> None:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="?", default="results", type=Path, help="the results folder (default results)")
    ap.add_argument("--add", action="store_true", help="add RESULTS_DIR's records to the published ones")
    ap.add_argument("--replace", action="store_true", help="replace the published records even where RESULTS_DIR "
                    "lacks some of them (they are dropped)")
    ap.add_argument("--allow-mixed-builds", action="store_true")
    ap.add_argument("--allow-unclean", action="store_true")
    ap.add_argument("--reference", type=Path, default=Path(__file__).resolve().parents[1] / "results" / "reference",
                    help="the folder to write (default results/reference)")
    args = ap.parse_args(argv)
    source, ref = args.results, args.reference
    if not (source / "records").is_dir():
        sys.exit(f"error: {source} has no records/ folder, so there is nothing to publish. Name the results folder "
                 "of the suite (e.g. .venv/bin/python scripts/make_reference.py /path/to/results).")
    records = [r for r in load_records(source) if r["status"] == "complete"]
    published = {p.parent.name for p in (ref / "records").glob("*/record.json")}
    dropped = sorted(published - {r["run_id"] for r in records})
    if dropped and not (args.add or args.replace):
        sys.exit(f"error: {len(dropped)} published record(s) in {ref / 'records'} are not among the complete records "
                 f"of {source} ({', '.join(dropped[:5])}{' ...' if len(dropped) > 5 else ''}), and replacing the "
                 "reference would drop them. A suite resumed on a fresh machine gets them back first "
                 "(scripts/resume_from_reference.py, or --from-reference on scripts/tiny_seeds.sh); pass --add to "
                 "keep them beside the new records, or --replace to drop them knowingly (e.g. after a version bump "
                 "re-ran them under new run ids).")
    bad = unclean(records)
    if bad and not args.allow_unclean:
        sys.exit(f"error: {len(bad)} record(s) in {source} were not made from a clean commit (provenance.git_dirty is "
                 f"not false, or no git_commit): {', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}. Published "
                 "records come from a clean tree: commit, re-run them (the cache makes unchanged stages cheap), or "
                 "pass --allow-unclean to keep them knowingly.")
    if not args.add:
        shutil.rmtree(ref / "records", ignore_errors=True)
    for rec in records:
        write_record(ref / "records" / rec["run_id"] / "record.json", slim(rec))
    scratch = ref / ".build"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(ref / "records", scratch / "records")
    write_leaderboard(scratch, allow_mixed_builds=args.allow_mixed_builds)
    for name in KEEP:
        shutil.copy(scratch / name, ref / name)
    for old in ref.glob("tradeoff_*.png"):  # strength against utility beside the uninformed line, per method
        old.unlink()
    for figure in scratch.glob("tradeoff_*.png"):
        shutil.copy(figure, ref / figure.name)
    for name, marker in (("roc", "roc_summary.csv"), ("roc_aligned", "roc_summary.csv"), ("dispute", "*_raw.csv")):
        if list((source / name).glob(marker)):  # ROC with and without alignment, disputes (their models stay in the cache)
            shutil.rmtree(ref / name, ignore_errors=True)
            shutil.copytree(source / name, ref / name)
    for search in sorted(p.parent for p in (source / "search").glob("*/study.db")):
        publish_search(search, ref / "search" / search.name)
    shutil.rmtree(scratch)
    print(f"wrote {ref}: {len(list((ref / 'records').glob('*/record.json')))} records")


if __name__ == "__main__":
    main()
