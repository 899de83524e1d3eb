"""Records -> leaderboard rows: one row per configuration, statistics over its seeds.

A row is one identity (`bench.identity`): model, data, method variant, attack variant and metric
settings; only runs identical apart from `seed` share a row. Records at older component versions are
superseded by those at the newest versions with the same labels, even where the bump changed the config
hash (they stay on disk and are counted).

Per metric, over the row's complete seeds (`n_seeds`):
* numbers: mean, standard deviation and a 95% t interval, mean ± t(0.975, n-1) s / sqrt(n)
  (columns `<m>`, `<m>/std`, `<m>/ci_low`, `<m>/ci_high`; no interval for one seed);
* verdicts (booleans): the fraction true with an exact Clopper-Pearson 95% interval (`<m>/k` counts);
* p-values are never averaged: `<m>/median`, the fraction of seeds at or below the target FPR
  (`<m>/frac_le_target`) and Fisher's combined p-value (`<m>/fisher`), valid because seeds draw
  independent keys, attack batches and query noise;
* numbers bounded to [0, 1] (bit accuracy, verification / detection / query rates): the t interval is
  clipped to that range, and says so by never leaving it;
* removal (`removal/*`, and the utility-qualified `removal_useful/*`: a removal that counts only where the
  model is still useful at that checkpoint, against the watermarked model; `removal_useful_base/*` against the
  base model): an interval-censored time, summarised by its median's bracket
  (`median_low`, `median`] and the exact order-statistic interval with its coverage (`bench.analysis.survival`), never by
  a mean; seeds whose mark was not detected before the attack are counted apart (`n_not_marked`). A row whose
  budgets are not numbers (a chain, quantisation formats, permutation kinds) is summarised on its checkpoint
  numbers (`<prefix>/ordinal` true): an order, so the counts and the within-budget verdict hold, and the times are
  checkpoints, not amounts;
* the attacked model's lower-tail and two-sided binomial p-values (`verify/attacked/p_lower`, `.../p_two_sided`:
  median and Fisher), from the last robustness checkpoint's counts: an inverted mark is evidence, not erasure.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats

from bench.identity import GROUPS, digest
from bench.analysis.survival import interval_median, tails

LABELS = list(GROUPS)  # model, data, method, attack, metrics: the columns that name a row
CENSORED = ("steps_to_removal", "removal_budget", "removal/lower", "removal/upper", "removal/event",
            "removal_useful/step", "removal_useful/budget", "survived_within_budget",
            "removal_useful_base/step", "removal_useful_base/budget", "survived_within_budget_base")


def identity_of(rec: dict) -> dict:
    """A record's identity; records without one (written by hand) get one from their names and config."""
    if rec.get("identity"):
        return rec["identity"]
    labels = {g: str(rec.get(g, "?")) for g in LABELS}
    config = {k: v for k, v in rec.get("config", {}).items() if k != "seed"}
    return {"group": digest([labels, config]), "labels": labels, "components": {g: labels[g] for g in LABELS}}


def version_key(versions) -> tuple:
    """A sortable form of a record's `versions` (nested dicts of version strings): numbers compare as numbers."""
    if isinstance(versions, dict):
        return tuple((k, version_key(versions[k])) for k in sorted(versions))
    text = str(versions)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def current(records: list[dict]) -> tuple[list[dict], int]:
    """The records at the newest component versions of their row, and how many older ones were set aside.

    Rows are matched by their labels, not only by their config hash: a version bump that adds a config key
    (say `trigger_target`) changes the hash, yet the old records are still the superseded default of the
    same variant. Newest means the highest versions, whatever order the files were written or checked out in.
    """
    def row(rec: dict) -> tuple:
        labels = identity_of(rec)["labels"]
        return tuple(str(labels.get(g)) for g in LABELS)

    keys = [(row(rec), version_key(rec.get("versions"))) for rec in records]  # each computed once
    newest: dict[tuple, tuple] = {}
    for label, key in keys:
        newest[label] = max(newest.get(label, key), key)
    kept = [r for r, (label, key) in zip(records, keys) if key == newest[label]]
    return kept, len(records) - len(kept)


def group_records(records: list[dict], by: tuple, where: Callable[[dict], bool] | None = None) -> dict[tuple, list[dict]]:
    """The current records (`current`) that `where` keeps, grouped by a key of their row labels (`row_labels`):
    each item of `by` is a label name ("model", "attack", ...) or a function of the record (e.g. its seed)."""
    records, _ = current([r for r in records if where is None or where(r)])
    labels = row_labels(records)
    out: dict[tuple, list[dict]] = {}
    for rec in records:
        lab = labels[identity_of(rec)["group"]]
        out.setdefault(tuple(k(rec) if callable(k) else lab[k] for k in by), []).append(rec)
    return out


def row_labels(records: list[dict]) -> dict[str, dict]:
    """group -> its labels; derived labels that two groups share get '#<hash>' on the part that differs."""
    by_group = {identity_of(r)["group"]: identity_of(r) for r in records}
    out = {g: dict(i["labels"]) for g, i in by_group.items()}
    clashes: dict[tuple, list[str]] = {}
    for g, labels in out.items():
        clashes.setdefault(tuple(labels[k] for k in LABELS), []).append(g)
    for groups in clashes.values():
        if len(groups) > 1:
            for part in LABELS:
                comps = {by_group[g]["components"][part] for g in groups}
                if len(comps) > 1:
                    for g in groups:
                        out[g][part] += f"#{str(by_group[g]['components'][part])[:6]}"
    return out


BOUNDED = ("bit_acc", "verification_rate", "detection_rate", "query_rate@")  # metrics in [0, 1]


def bounds_of(name: str) -> tuple[float, float] | None:
    """The range of a metric whose values cannot leave it ([0, 1] for rates), else None."""
    last = name.rsplit("/", 1)[-1]
    return (0.0, 1.0) if any(last == b or (b.endswith("@") and last.startswith(b)) for b in BOUNDED) else None


def t_interval(values: list[float], bounds: tuple[float, float] | None = None) -> tuple[float, float, float, float]:
    """(mean, sd, low, high): the 95% t interval of the mean (low = high = nan for one value), clipped to `bounds`."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan, math.nan
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.975, len(x) - 1)) * sd / math.sqrt(len(x))
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return mean, sd, low, high


def clopper_pearson(k: int, n: int) -> tuple[float, float]:
    """The exact 95% interval of a proportion k/n."""
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return float(ci.low), float(ci.high)


def fisher(ps: list[float]) -> float:
    """Fisher's combined p-value of independent p-values."""
    ps = [min(max(float(p), 1e-300), 1.0) for p in ps]
    return float(stats.combine_pvalues(ps, method="fisher").pvalue) if len(ps) > 1 else ps[0]


def removal_intervals(recs: list[dict], prefix: str, ordinal: bool = False) -> list[dict] | None:
    """Each record's removal as an interval (lower, upper] with `event` (see `bench.analysis.survival`), for `removal` (the
    first checkpoint not detected) or `removal_useful` (the first one not detected *and* within the utility budget
    there, relative to the watermarked model) or `removal_useful_base` (the budget relative to the base model); None
    when a record lacks them or a budget is not a number.

    With `ordinal`, a row whose budgets are not numbers (a chain's "permute:all → lora_ft:step 300", quantisation
    formats, permutation kinds) is put on its checkpoint schedule's positions instead (0 = unattacked, 1 = the first
    checkpoint, ...), provided every seed ran the same schedule: the counts (removed, removed within the utility
    budget) then mean what they mean for a numeric schedule, and the times are checkpoint numbers, an order and not a
    scale (never divide them; `schedule_of` tells such a row apart)."""
    schedule = schedule_of(recs) if ordinal else None
    if schedule is not None:
        def place(v):
            return schedule.index(v) if v in schedule else v  # a budget off the schedule stays a string: refused below
    else:
        def place(v):
            return v
    out = []
    useful = prefix != "removal"
    for r in recs:
        m = r["metrics"]
        if "removal/event" not in m or (useful and f"{prefix}/budget" not in m):
            return None
        lower, upper, event = (m[f"removal/{k}"]["value"] for k in ("lower", "upper", "event"))
        lower, upper = (None if v is None else place(v) for v in (lower, upper))
        if useful and lower is not None:  # a mark there before the attack
            useful_at = m[f"{prefix}/budget"]["value"]
            curve = [place(p["budget"]) for p in (r.get("curves") or {}).get("robustness", [])]
            if useful_at is None:
                lower, upper, event = (curve[-1] if curve else (lower if not event else None)), None, False
            else:
                useful_at = place(useful_at)
                before = [b for b in curve if _is_number(b) and _is_number(useful_at) and b < useful_at]
                lower, upper, event = (max(before) if before else lower), useful_at, True
                if lower is None:
                    return None
        for v in (lower, upper):
            if v is not None and not _is_number(v):
                return None
        if not event and lower is None:
            return None
        out.append({"lower": lower, "upper": upper, "event": bool(event)})
    return out


def schedule_of(recs: list[dict]) -> list | None:
    """The checkpoint budgets every record of a row ran, in order, when they are not all numbers and every record
    has the same ones (the ordinal axis of `removal_intervals`); None for a numeric schedule or differing ones."""
    schedules = {tuple(p["budget"] for p in (r.get("curves") or {}).get("robustness", [])) for r in recs}
    if len(schedules) != 1:
        return None
    schedule = list(next(iter(schedules)))
    if not schedule or all(_is_number(b) for b in schedule) or len(set(map(str, schedule))) != len(schedule):
        return None
    return schedule


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _removal(recs: list[dict], prefix: str) -> dict:
    """The interval-censored removal columns (`removal`, `removal_useful` or `removal_useful_base`)."""
    intervals = removal_intervals(recs, prefix, ordinal=True)
    if intervals is None:
        return {}
    s = interval_median(intervals)
    return {f"{prefix}/ordinal": schedule_of(recs) is not None,
            f"{prefix}/median": s["median_high"], f"{prefix}/median_low": s["median_low"],
            f"{prefix}/ci_low": s["ci_low"], f"{prefix}/ci_high": s["ci_high"], f"{prefix}/ci_coverage": s["coverage"],
            f"{prefix}/n_removed": s["n_removed"], f"{prefix}/n_marked": s["n"], f"{prefix}/n_not_marked": s["n_not_marked"]}


def evidence_tails(recs: list[dict]) -> dict:
    """Median and Fisher's combination of the attacked model's lower-tail and two-sided p-values over seeds."""
    found = [tails(curve[-1]) for r in recs if (curve := (r.get("curves") or {}).get("robustness"))]
    found = [t for t in found if t is not None]
    if not found or len(found) != len(recs):
        return {}
    out = {}
    for side, name in (("lower", "p_lower"), ("two_sided", "p_two_sided")):
        ps = [t[side] for t in found]
        out[f"verify/attacked/{name}/median"] = float(np.median(ps))
        out[f"verify/attacked/{name}/fisher"] = fisher(ps)
    return out


def summarise(recs: list[dict]) -> dict:
    """The statistics of one row's complete records (see the module docstring)."""
    out: dict = {"seeds": " ".join(str(r["seed"]) for r in sorted(recs, key=lambda r: r["seed"]))}
    target = recs[0].get("config", {}).get("metrics", {}).get("verification", {}).get("target_fpr", 1e-3)
    names = list(dict.fromkeys(n for r in recs for n in r.get("metrics", {})))
    for name in names:
        if name in CENSORED:
            continue
        vals = [r["metrics"][name]["value"] for r in recs if name in r["metrics"]]
        vals = [v for v in vals if v is not None]
        if not vals or any(isinstance(v, str) for v in vals):
            continue
        if name.endswith("p_value"):
            out[f"{name}/median"] = float(np.median(vals))
            out[f"{name}/frac_le_target"] = float(np.mean([v <= target for v in vals]))
            out[f"{name}/fisher"] = fisher(vals)
        elif all(isinstance(v, bool) for v in vals):
            k, n = sum(vals), len(vals)
            out[name], out[f"{name}/k"] = k / n, k
            out[f"{name}/ci_low"], out[f"{name}/ci_high"] = clopper_pearson(k, n)
        else:
            out[name], out[f"{name}/std"], out[f"{name}/ci_low"], out[f"{name}/ci_high"] = \
                t_interval(vals, bounds_of(name))
    out.update(_removal(recs, "removal"))
    out.update(_removal(recs, "removal_useful"))
    out.update(_removal(recs, "removal_useful_base"))
    out.update(evidence_tails(recs))
    return out


def table(records: list[dict]) -> pd.DataFrame:
    """One row per configuration: labels, status, n_seeds and every metric's statistics."""
    records, superseded = current(records)
    labels = row_labels(records)
    rows: dict[str, list[dict]] = {}
    for rec in sorted(records, key=lambda r: (r["seed"], r["run_id"])):
        rows.setdefault(identity_of(rec)["group"], []).append(rec)
    out = []  # rows in label order, seeds in order: the columns' order does not depend on the files' mtimes
    for group, recs in sorted(rows.items(), key=lambda item: tuple(str(labels[item[0]][k]) for k in LABELS)):
        complete = [r for r in recs if r["status"] == "complete"]
        failed = [r for r in recs if r["status"] != "complete"]
        row = {**labels[group], "group": group[:8], "n_seeds": len(complete), "n_failed": len(failed),
               "status": "complete" if not failed else "failed" if not complete else "partial",
               "error": next((r.get("error") for r in failed), None)}
        if complete:
            row.update(summarise(complete))
        out.append(row)
    front = LABELS + ["status", "n_seeds", "n_failed", "seeds", "group"]
    if not out:
        return pd.DataFrame(columns=front)
    df = pd.DataFrame(out)
    df = df[[c for c in front if c in df] + [c for c in df.columns if c not in front]]
    df.attrs["superseded"] = superseded
    return df.sort_values(LABELS).reset_index(drop=True)
