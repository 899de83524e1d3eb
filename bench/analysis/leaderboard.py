"""Aggregate records into a leaderboard: CSV, markdown tables and robustness plots.

    python -m bench.tools.leaderboard [RESULTS_DIR]

Reads every `record.json` under `<RESULTS_DIR>/records` (failed runs included) and writes into
RESULTS_DIR: `leaderboard.csv` (one row per configuration, every metric's statistics over seeds:
`bench.analysis.aggregate`), `leaderboard.md` (the headline metrics as mean ± 95% half-width, with ↑/↓
for the better direction), `survival.md` (attacks x methods: removal as an interval-censored median
over seeds with its order-statistic interval, and the attacker's utility), `robustness_<model>_<attack>.png` and
`lmc_<model>_<attack>.png` (`bench.analysis.plots`), `report.html` (all of it on one self-contained page, with
sample grids and each run's config: `bench.analysis.report`); and logs the leaderboard to wandb when the
newest record's run used `logger=wandb`.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd

from bench.analysis.aggregate import LABELS, current, identity_of, row_labels, table
from bench.analysis.tables import markdown, survival_matrix
from bench.cache import atomic_file, write_json_atomic, write_text_atomic
from bench.errors import BenchError
from bench.identity import check_label_collisions
from bench.untrusted import csv_safe, safe_cell

log = logging.getLogger(__name__)

def world_builds(records: list[dict]) -> tuple[list[str], dict[str, dict[str, list]]]:
    """Which builds of its world each row's seeds ran on (records' `provenance.world_fingerprint`).

    Returns the rows whose seeds ran on two or more builds (same config, other weights: another thread count or
    machine, so their spread is not only the seeds'), and, for each of them, the seeds per build. A seed whose
    build was not recorded (records older than the fingerprint) counts as a build of its own, "unrecorded":
    nothing says it ran on the others' weights."""
    kept, _ = current([r for r in records if r.get("status") == "complete"])
    labels, prints = row_labels(kept), {}
    for rec in kept:
        fp = (rec.get("provenance") or {}).get("world_fingerprint") or "unrecorded"
        prints.setdefault(identity_of(rec)["group"], {}).setdefault(fp, []).append(rec["seed"])
    name = {g: " / ".join(labels[g][k] for k in LABELS) for g in prints}
    breakdown = {name[g]: {fp: sorted(seeds) for fp, seeds in sorted(c.items())}
                 for g, c in sorted(prints.items(), key=lambda x: name[x[0]]) if len(c) > 1}
    return sorted(breakdown), breakdown


def _seeds_per_build(by: dict[str, list]) -> str:
    return ", ".join("seeds " + " ".join(map(str, seeds)) + f" on {fp}" for fp, seeds in by.items())


def refuse_mixed_builds(builds: dict[str, dict[str, list]]) -> None:
    """One paragraph naming every row that pools builds of its world, with its seeds per build."""
    rows = "; ".join(f"{row}: {_seeds_per_build(by)}" for row, by in builds.items())
    raise BenchError(
        f"{len(builds)} row(s) would pool seeds run on different builds of their world (records' "
        f"provenance.world_fingerprint; 'unrecorded' is a build of its own): {rows}. Two builds of one world config "
        "have different weights, so such a row's spread is not only the seeds'. Fix: re-run those seeds on one build "
        "(the shipped tiny world, model.source=shipped, is the same everywhere) and remove the others' records, or "
        "aggregate with --allow-mixed-builds (python -m bench.tools.leaderboard) to pool them knowingly: the tables then say "
        "which rows pool builds.")


def pooled_note(builds: dict[str, dict[str, list]]) -> str:
    """The line above a table whose rows pool world builds (--allow-mixed-builds)."""
    rows = "; ".join(f"{row} ({_seeds_per_build(by)})" for row, by in builds.items())
    return f"**Pooled world builds** (aggregated with --allow-mixed-builds): {rows}.\n\n"


def write_leaderboard(results_dir: Path, require_records: bool = False, skip_bad: bool = False,
                      allow_mixed_builds: bool = False) -> pd.DataFrame:
    """Write leaderboard.csv / .md, survival.md, leaderboard_meta.json, the plots and report.html; return the table.

    Every record is parsed first (`bench.record.scan_records`): a file that is not a readable record is refused,
    naming it, and nothing is written, unless `skip_bad` (it is then left out with a warning and listed in
    leaderboard_meta.json). The tables are computed in full before any file is replaced, and each file is
    replaced atomically. `require_records`: refuse (BenchError) a folder with no records instead of writing
    nothing. A row whose seeds ran on different builds of its world is refused (`refuse_mixed_builds`) unless
    `allow_mixed_builds`; the markdown tables and the meta file then name the pooled rows."""
    from bench.analysis.plots import plot_lmc, plot_robustness, plot_tradeoff
    from bench.record import refuse_bad, scan_records
    from bench.analysis.report import write_report

    results_dir = Path(results_dir)
    start = time.perf_counter()
    records, bad = scan_records(results_dir)
    refuse_bad(bad, skip_bad)
    skipped = [str(p) for p, _ in bad]
    if not records:  # nothing ran (e.g. every job was refused): write nothing
        if require_records:
            raise BenchError(f"No records under {results_dir / 'records'}: there is nothing to aggregate. Point the "
                             "command at a results folder that holds records/<run id>/record.json (the default is "
                             "results/), or run a sweep first: python -m bench method=watermarkdm attack=full_ft -m")
        log.info("no records under %s", results_dir / "records")
        return table(records)
    check_label_collisions(records)
    mixed, builds = world_builds(records)
    if mixed and not allow_mixed_builds:
        refuse_mixed_builds(builds)
    note = pooled_note(builds) if mixed else ""
    df = table(records)
    directions = {n: m["higher_is_better"] for r in records for n, m in r.get("metrics", {}).items()}
    board = note + markdown(df, directions)
    matrix = survival_matrix(records)
    survival = None if matrix.empty else note + matrix.fillna("").map(safe_cell).rename(columns=safe_cell).to_markdown(index=False) + "\n"
    meta = {"higher_is_better": directions, "n_records": len(records),
            "n_superseded": int(df.attrs.get("superseded", 0)), "n_rows": len(df),
            "mixed_world_builds": mixed, "world_builds": builds, "pooled_world_builds": bool(mixed),
            **({"skipped_records": skipped} if skipped else {})}
    # everything is computed: now replace the files, each atomically
    results_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(results_dir / "leaderboard.csv") as tmp:
        df.map(csv_safe).to_csv(tmp, index=False)
    write_text_atomic(results_dir / "leaderboard.md", board)
    if survival is not None:
        write_text_atomic(results_dir / "survival.md", survival)
    write_json_atomic(results_dir / "leaderboard_meta.json", meta)
    plot_robustness(records, results_dir)
    plot_lmc(records, results_dir)
    plot_tradeoff(records, results_dir)
    write_report(results_dir, records)
    log.info("leaderboard: %d rows from %d records (%d superseded) in %.1f s -> %s", len(df), len(records),
             df.attrs.get("superseded", 0), time.perf_counter() - start, results_dir / "leaderboard.csv")
    return df


def log_to_logger(logger_cfg, results_dir: Path) -> None:
    """Log the leaderboard to the user's configured logger (a config with `_target_`, e.g. logger=wandb). The
    logger comes from the user's own config (the sweep's, or `--logger NAME` of conf/logger/), never a record."""
    if logger_cfg and "_target_" in logger_cfg:
        from hydra.utils import instantiate
        instantiate(logger_cfg).log_leaderboard(Path(results_dir))
