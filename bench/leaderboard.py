"""Aggregate records into a leaderboard: CSV, markdown tables and robustness plots.

    python -m bench.leaderboard [RESULTS_DIR]

Reads every `record.json` under `<RESULTS_DIR>/records` (failed runs included) and writes into
RESULTS_DIR: `leaderboard.csv` (one row per configuration, every metric's statistics over seeds:
`bench.aggregate`), `leaderboard.md` (the headline metrics as mean ± 95% half-width, with ↑/↓
for the better direction), `survival.md` (attacks x methods: removal as a Kaplan-Meier median
over seeds with its interval, and the attacker's utility), `robustness_<model>_<attack>.png` and
`lmc_<model>_<attack>.png` (`bench.plots`), `report.html` (all of it on one self-contained page, with
sample grids and each run's config: `bench.report`); and logs the leaderboard to wandb when the
newest record's run used `logger=wandb`.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from pathlib import Path

import pandas as pd

from bench.aggregate import LABELS, bounds_of, current, evidence_tails, identity_of, removal_intervals, row_labels, table
from bench.cache import write_json_atomic
from bench.errors import BenchError, ConfigError
from bench.identity import check_label_collisions
from bench.survival import describe_interval, interval_median
from bench.untrusted import csv_safe, safe_cell

log = logging.getLogger(__name__)
# (metric, column title) shown in leaderboard.md, in this order, when present
HEADLINE = [("verify/watermarked/bit_acc", "marked bit acc"), ("verify/watermarked/verification_rate", "marked verif."),
            ("verify/watermarked/detected", "marked detected"), ("verify/watermarked/p_value", "marked p"),
            ("verify/attacked/bit_acc", "attacked bit acc"), ("verify/attacked/verification_rate", "attacked verif."),
            ("verify/attacked/detected", "attacked detected"), ("removal", "removal (median, CI)"),
            ("false_positives", "false pos."), ("fid/watermarked", "FID marked"), ("fid/attacked", "FID attacked"),
            ("clip_score/watermarked", "CLIP marked"), ("utility/attacked/owner_loss_ratio", "owner loss ratio"),
            ("utility/attacked/attacker_gain", "attacker gain"), ("embed_seconds", "embed s")]


def _g(x: float) -> str:
    return "∞" if isinstance(x, float) and math.isinf(x) else f"{x:.3g}"


def cell(row: pd.Series, name: str) -> str:
    """One markdown cell: mean ± half-width (rates: mean (low–high), their interval clipped to [0, 1]), k/n for
    verdicts, median/Fisher for p-values, the interval-censored median's bracket and interval for removal."""
    n = int(row.get("n_seeds", 0) or 0)
    if name == "removal":
        med = row.get("removal/median")
        if med is None or pd.isna(med):
            return ""
        k, marked = int(row["removal/n_removed"]), int(row.get("removal/n_marked", n))
        unmarked = f", {n - marked} not marked" if marked < n else ""
        if k == 0:
            return f"survives {marked}/{marked}{unmarked}"
        if isinstance(med, float) and math.isinf(med):
            return f"not reached, {k}/{marked} removed{unmarked}"
        cov = row.get("removal/ci_coverage")
        ci = (f" ({cov:.0%} CI {_g(row['removal/ci_low'])}–{_g(row['removal/ci_high'])})"
              if cov is not None and not pd.isna(cov) and cov > 0 else "")  # one seed: no interval
        return f"({_g(row['removal/median_low'])}, {_g(med)}]{ci}, {k}/{marked} removed{unmarked}"
    if name.endswith("p_value"):
        med = row.get(f"{name}/median")
        return "" if med is None or pd.isna(med) else f"{med:.2g} (Fisher {row[f'{name}/fisher']:.2g})"
    value = row.get(name)
    if value is None or pd.isna(value):
        return ""
    if f"{name}/k" in row and not pd.isna(row.get(f"{name}/k")):
        return f"{int(row[f'{name}/k'])}/{n}"
    lo, hi = row.get(f"{name}/ci_low"), row.get(f"{name}/ci_high")
    if lo is None or pd.isna(lo):
        return f"{value:.3g}"
    if bounds_of(name) is not None:  # a rate: its interval is clipped to [0, 1], so it is shown as a range
        return f"{value:.3g} ({lo:.3g}–{hi:.3g})"
    return f"{value:.3g} ± {(hi - lo) / 2:.2g}"


def arrow(directions: dict, name: str) -> str:
    d = directions.get("steps_to_removal" if name == "removal" else name)
    return " ↑" if d is True else " ↓" if d is False else ""


def markdown(df: pd.DataFrame, directions: dict) -> str:
    """The headline table: one row per configuration, intervals as ± 95% half-widths."""
    shown = [(m, t) for m, t in HEADLINE if m in df.columns or f"{m}/median" in df.columns]
    header = LABELS + ["n"] + [t + arrow(directions, m) for m, t in shown]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in df.iterrows():
        status = "" if row["status"] == "complete" else f" ({row['status']})"
        cells = [safe_cell(row[c]) for c in LABELS] + [f"{int(row['n_seeds'])}{status}"] + [cell(row, m) for m, _ in shown]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def survival_matrix(records: list[dict]) -> pd.DataFrame:
    """Attacks x methods, per model / data / metric settings: the removal over seeds (Kaplan-Meier median and
    interval in the attack's budget units), the removal within the utility budget, and the attacker's utility
    at the last checkpoint (owner-domain loss ratio, attacker gain, FID change) as means over seeds."""
    records, _ = current([r for r in records if r["status"] == "complete" and "removal/event" in r.get("metrics", {})])
    labels = row_labels(records)
    cells: dict[tuple, list[dict]] = {}
    for rec in records:
        lab = labels[identity_of(rec)["group"]]
        cells.setdefault((lab["model"], lab["data"], lab["metrics"], lab["attack"], lab["method"]), []).append(rec)
    rows: dict[tuple, dict] = {}
    for (model, data, metrics, attack, method), recs in sorted(cells.items()):
        unit = recs[0]["curves"]["robustness"][0].get("budget_label", "step")
        m = [r["metrics"] for r in recs]
        every, useful = removal_intervals(recs, "removal"), removal_intervals(recs, "removal_useful")
        if every is None:  # budgets that are not numbers (quantisation formats): list them
            removed = [x["removal_budget"]["value"] for x in m if x["removal/event"]["value"]]
            text = (f"removed in {len(removed)}/{len(m)} seeds (at {', '.join(map(str, dict.fromkeys(removed)))})"
                    if removed else f"survives in {len(m)}/{len(m)} seeds")
        elif useful is not None:  # the verdict: removals that leave a useful model at that checkpoint
            any_removal = interval_median(every)
            text = (f"within the utility budget: {describe_interval(interval_median(useful), unit)} "
                    f"(any removal: {any_removal['n_removed']}/{any_removal['n']})")
        else:
            text = describe_interval(interval_median(every), unit)
        lower = evidence_tails(recs).get("verify/attacked/p_lower/fisher")
        if lower is not None and lower <= 1e-3:
            text += f"; inverted after the attack: lower-tail Fisher p {lower:.2g} (the verdict's test is upper-tail)"
        util = []
        for key, fmt in (("utility/attacked/owner_loss_ratio", "owner loss ×{:.2f}"),
                         ("utility/attacked/attacker_gain", "gain {:.2f}"), ("utility/attacked/fid_increase", "FID {:+.1f}")):
            vals = [x[key]["value"] for x in m if key in x and x[key]["value"] is not None]
            if vals:
                util.append(fmt.format(sum(vals) / len(vals)))
        if util:
            text += f" [{', '.join(util)}]"
        rows.setdefault((model, data, metrics, attack), {"model": model, "data": data, "metrics": metrics,
                                                         "attack": attack})[method] = text
    df = pd.DataFrame(list(rows.values()))
    if df.empty:
        return df
    fixed = ["model", "data", "metrics", "attack"]
    keep = [c for c in fixed if c == "attack" or df[c].nunique() > 1]
    return df[keep + sorted(c for c in df.columns if c not in fixed)]


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


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
        "aggregate with --allow-mixed-builds (python -m bench.leaderboard) to pool them knowingly: the tables then say "
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
    from bench.plots import plot_lmc, plot_robustness
    from bench.record import refuse_bad, scan_records
    from bench.report import write_report

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
    tmp = results_dir / f".leaderboard.csv.tmp-{os.getpid()}"
    df.map(csv_safe).to_csv(tmp, index=False)
    tmp.replace(results_dir / "leaderboard.csv")
    _write_text(results_dir / "leaderboard.md", board)
    if survival is not None:
        _write_text(results_dir / "survival.md", survival)
    write_json_atomic(results_dir / "leaderboard_meta.json", meta)
    plot_robustness(records, results_dir)
    plot_lmc(records, results_dir)
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


def user_logger(name: str, results_dir: Path):
    """conf/logger/NAME.yaml, composed for `results_dir` (None for `none`); an unknown name is one paragraph."""
    from bench.untrusted import registry
    known = sorted(set(registry("logger").values()) | {"none"})
    if name not in known:
        raise ConfigError(f"--logger {name!r} is not one of conf/logger/ ({', '.join(known)}).")
    if name == "none":
        return None
    from hydra import compose, initialize_config_dir

    import bench.config  # noqa: F401
    from bench.identity import CONF
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[f"logger={name}", f"paths.results_dir={results_dir}"]).logger


def main(argv: list[str] | None = None) -> int:
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
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    folder = Path(args.results_dir)
    try:
        logger = user_logger(args.logger, folder)
        if not folder.is_dir():
            raise BenchError(f"Results folder '{folder}' does not exist. Give the folder a sweep wrote (it holds "
                             "records/), e.g. python -m bench.leaderboard results")
        write_leaderboard(folder, require_records=True, skip_bad=args.skip_bad,
                          allow_mixed_builds=args.allow_mixed_builds)
    except (BenchError, ConfigError) as err:
        print(f"\nerror: {err}\n", file=sys.stderr)
        return 2
    print((folder / "leaderboard.md").read_text())
    if (folder / "survival.md").is_file():
        print((folder / "survival.md").read_text())
    log_to_logger(logger, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
