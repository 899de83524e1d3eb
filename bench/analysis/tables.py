"""The leaderboard's tables as text: headline columns, one cell per statistic, the markdown table and the
survival matrix (attacks x methods). Shared by the markdown leaderboard (`bench.analysis.leaderboard`) and the
HTML report (`bench.analysis.report`), so neither imports the other's writer."""
from __future__ import annotations

import math

import pandas as pd
import yaml

from bench.analysis.aggregate import (LABELS, bounds_of, evidence_tails, group_records, removal_intervals,
                                      schedule_of)
from bench.analysis.survival import describe_interval, interval_median
from bench.identity import CONF, declared_attribute
from bench.untrusted import registry, safe_cell

# the harness's own headline columns (the runner's, not a collector's), after the collectors'
HARNESS_HEADLINE = [("embed_seconds", "embed s")]


def declared_headline(target: str) -> list[tuple[str, str]]:
    """The `headline` a collector class (`module.Class`, a `_target_`) declares, read from source
    (`bench.identity.declared_attribute`): the leaderboard never imports a collector (they import torch, which would
    make every aggregation seconds slower). tests/test_contract.py checks that this reading equals the class
    attribute."""
    return [tuple(column) for column in declared_attribute(target, "headline") or ()]


def headline() -> list[tuple[str, str]]:
    """(metric, column title) of leaderboard.md, in order: the `headline` of every collector in conf/metrics/
    (those of metrics/default.yaml in its order, then the others), then the harness's own columns."""
    collectors = registry("metrics")  # _target_ -> YAML name
    defaults = (yaml.safe_load((CONF / "metrics" / "default.yaml").read_text()) or {}).get("defaults", [])
    rank = {name: i for i, name in enumerate(d for d in defaults if isinstance(d, str))}
    ordered = sorted(collectors, key=lambda target: (rank.get(collectors[target], len(rank)), collectors[target]))
    return [column for target in ordered for column in declared_headline(target)] + HARNESS_HEADLINE


# (metric, column title) shown in leaderboard.md, in this order, when present
HEADLINE = headline()


def _g(x: float) -> str:
    return "∞" if isinstance(x, float) and math.isinf(x) else f"{x:.3g}"


def ordinal(row: pd.Series, prefix: str) -> bool:
    """Whether a row's removal times (`prefix`: removal, removal_useful, ...) are checkpoint numbers on a schedule
    whose budgets are not numbers (`bench.analysis.aggregate.schedule_of`), read from a frame or its CSV."""
    v = row.get(f"{prefix}/ordinal")
    return v is not None and not pd.isna(v) and bool(v)


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
        where = "checkpoint " if ordinal(row, "removal") else ""  # a schedule of names: checkpoint numbers
        return f"{where}({_g(row['removal/median_low'])}, {_g(med)}]{ci}, {k}/{marked} removed{unmarked}"
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
    """Attacks x methods, per model / data / metric settings: the removal over seeds (interval-censored median
    and its order-statistic interval in the attack's budget units), the removal within the utility budget
    (relative to the watermarked model; the count against the base model beside it, where records have it), and
    the attacker's utility
    at the last checkpoint (owner-domain loss ratio, attacker gain, FID change) as means over seeds."""
    cells = group_records(records, ("model", "data", "metrics", "attack", "method"),
                          lambda r: r["status"] == "complete" and "removal/event" in r.get("metrics", {}))
    rows: dict[tuple, dict] = {}
    for (model, data, metrics, attack, method), recs in sorted(cells.items()):
        schedule = schedule_of(recs)  # budgets that are names (a chain's links, formats): checkpoint numbers
        unit = "checkpoint" if schedule is not None else recs[0]["curves"]["robustness"][0].get("budget_label", "step")
        m = [r["metrics"] for r in recs]
        every, useful = (removal_intervals(recs, p, ordinal=True) for p in ("removal", "removal_useful"))
        if every is None:  # budgets that are not numbers and differ between seeds: list them
            removed = [x["removal_budget"]["value"] for x in m if x["removal/event"]["value"]]
            text = (f"removed in {len(removed)}/{len(m)} seeds (at {', '.join(map(str, dict.fromkeys(removed)))})"
                    if removed else f"survives in {len(m)}/{len(m)} seeds")
        elif useful is not None:  # the verdict: removals that leave a useful model at that checkpoint
            any_removal, shown = interval_median(every), interval_median(useful)
            text = (f"within the utility budget: {describe_interval(shown, unit)} "
                    f"(any removal: {any_removal['n_removed']}/{any_removal['n']}")
            base = removal_intervals(recs, "removal_useful_base", ordinal=True)
            if base is not None:  # the same budget against the base model the owner started from
                against_base = interval_median(base)
                text += f"; within the budget against the base model: {against_base['n_removed']}/{against_base['n']}"
            text += ")"
        else:
            shown = interval_median(every)
            text = describe_interval(shown, unit)
        if schedule is not None and every is not None:  # name the checkpoints the median's bracket stands for
            ends = [int(shown[k]) for k in ("median_low", "median_high")
                    if shown["n_removed"] and math.isfinite(shown[k])]
            if ends:
                text += " {" + "; ".join(f"checkpoint {i}: {schedule[i]}" for i in dict.fromkeys(ends)) + "}"
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
