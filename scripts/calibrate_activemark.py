"""ActiveMark's per-query null match rate (`method.query_p0`), calibrated on cross-key nulls, and its effect.

    .venv/bin/python scripts/calibrate_activemark.py [--out results/activemark_calibration] [--no-run] [--check]
        [--calibration-seeds 100-105] [--seeds 0-4] [OVERRIDE ...]

A model marked by another ActiveMark owner carries this owner's injected message to the read token too
(methods/activemark.py: its trained blocks pass any injected token on), so the binomial p0 under-states the
per-query match rate on that null. This script measures the rate and states the threshold it implies:

1. **Calibration.** ActiveMark embedded at `--calibration-seeds` (never the reported seeds) with
   `method.query_p0=null`, every key verified with all its hold-out queries (`n_holdout`) on every other
   calibration seed's watermarked model (`bench.tools.roc`, cross-key nulls only). query_p0 is the upper
   end of the exact 95% Clopper-Pearson interval of the per-query match rate over those (key, model) pairs,
   rounded up to two significant figures. The pairs are keys x models, not independent draws, so the
   interval is nominal.
2. **Before and after, held out.** The same at `--seeds` with the world's own number of queries: the
   cross-key verdicts at the binomial p0 (before) and at max(p0, query_p0) (after), each a rate over the
   K (K - 1) pairs with its exact interval, and the same for the keys on their own watermarked models (what
   the stricter threshold costs the owner).

Writes OUT/calibration.json and OUT/calibration.md (the tables), with the runs' records under OUT/calibration
and OUT/heldout. `--no-run` re-reads existing records; `--check` exits 1 unless conf/method/activemark.yaml's
query_p0 (at this scale) is the calibrated value. Extra arguments go to every `python -m bench` run (e.g.
model=micro for a quick look).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
from scipy.stats import binom

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.analysis.aggregate import clopper_pearson  # noqa: E402
from bench.cache import write_json_atomic  # noqa: E402


def seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def run(results: Path, seed_list: list[int], extra: list[str], queries: str | None) -> None:
    """ActiveMark with query_p0=null, attack=none, verification only, at these seeds (cached stages are reused)."""
    argv = [sys.executable, "-m", "bench", "method=activemark", "attack=none", "metrics=verification",
            "method.query_p0=null", f"seed={','.join(map(str, seed_list))}", f"paths.results_dir={results}",
            f"paths.cache_dir={ROOT / 'results' / 'cache'}", *extra, "-m"]
    if queries:
        argv.insert(-1, f"metrics.verification.n_queries={queries}")
    subprocess.run(argv, cwd=ROOT, check=True)


def verifications(results: Path, extra: list[str]) -> pd.DataFrame:
    """Every key on every watermarked model of its group (bench.tools.roc's rows; no independent nulls)."""
    from bench.tools.roc import measure
    measure(results, 0, 1, 0, ["activemark"], ROOT / "results" / "cache")
    [csv] = sorted((results / "roc").glob("*_activemark.csv"))
    rows = pd.read_csv(csv)
    return rows[rows.role.isin(["watermarked", "cross:watermarked"])]


def rate(k: int, n: int) -> dict:
    lo, hi = clopper_pearson(k, n)
    return {"k": k, "n": n, "rate": k / n if n else math.nan, "ci_low": lo, "ci_high": hi}


def round_up(x: float, digits: int = 2) -> float:
    scale = 10 ** (digits - 1 - math.floor(math.log10(x)))
    return math.ceil(x * scale) / scale


def verdicts(rows: pd.DataFrame, p0: float, target: float) -> dict:
    """Detected (one-sided binomial test of the match count at p0 <= target) on positives and cross-key nulls."""
    detected = binom.sf(rows.matches - 1, rows.n_queries, p0) <= target
    own, cross = rows.role == "watermarked", rows.role == "cross:watermarked"
    return {"p0": p0, "own": rate(int(detected[own].sum()), int(own.sum())),
            "cross": rate(int(detected[cross].sum()), int(cross.sum()))}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "activemark_calibration")
    parser.add_argument("--calibration-seeds", default="100-105")
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--target-fpr", type=float, default=1e-3)
    parser.add_argument("--no-run", action="store_true", help="re-read the records already under --out")
    parser.add_argument("--check", action="store_true", help="exit 1 unless the YAML holds the calibrated value")
    args, extra = parser.parse_known_args(argv)
    calib, held = args.out / "calibration", args.out / "heldout"
    if not args.no_run:
        run(calib, seeds(args.calibration_seeds), extra, "${method.n_holdout}")
        run(held, seeds(args.seeds), extra, None)
    cal = verifications(calib, extra)
    cross = cal[cal.role == "cross:watermarked"]
    measured = rate(int(cross.matches.sum()), int(cross.n_queries.sum()))
    query_p0 = round_up(measured["ci_high"])
    rows = verifications(held, extra)
    p0 = float(rows.query_p0.max())  # the binomial p0: the runs had query_p0=null
    figures = {"calibration": {"seeds": args.calibration_seeds, "keys": int(cal.key_seed.nunique()),
                               "pairs": len(cross), "queries": measured, "query_p0": query_p0},
               "heldout": {"seeds": args.seeds, "keys": int(rows.key_seed.nunique()),
                           "queries_per_verification": int(rows.n_queries.max()), "target_fpr": args.target_fpr,
                           "before": verdicts(rows, p0, args.target_fpr),
                           "after": verdicts(rows, max(p0, query_p0), args.target_fpr)},
               "extra_overrides": extra}
    held_cross = rows[rows.role == "cross:watermarked"]
    figures["heldout"]["cross_queries"] = rate(int(held_cross.matches.sum()), int(held_cross.n_queries.sum()))
    write_json_atomic(args.out / "calibration.json", figures)
    (args.out / "calibration.md").write_text(markdown(figures))
    print(markdown(figures))
    if args.check:
        from omegaconf import OmegaConf
        conf = OmegaConf.load(ROOT / "conf" / "method" / "activemark.yaml")
        print(f"conf/method/activemark.yaml: query_p0 = {conf.get('query_p0')!r}; calibrated: {query_p0}")
        return 0 if str(conf.get("query_p0")) in (str(query_p0), f"${{scale:null,{query_p0},null}}") else 1
    return 0


def markdown(f: dict) -> str:
    c, h = f["calibration"], f["heldout"]
    q = c["queries"]
    lines = [f"Calibration (seeds {c['seeds']}, {c['keys']} keys, {c['pairs']} cross-key pairs, every hold-out query): "
             f"{q['k']} of {q['n']} queries matched on models marked by another key, rate {q['rate']:.4f} "
             f"(95% CI {q['ci_low']:.4f}-{q['ci_high']:.4f}); query_p0 = {c['query_p0']:g}.", "",
             f"Held out (seeds {h['seeds']}, {h['keys']} keys, {h['queries_per_verification']} queries per verification, "
             f"target FPR {h['target_fpr']:g}; cross-key per-query rate {h['cross_queries']['k']}/"
             f"{h['cross_queries']['n']} = {h['cross_queries']['rate']:.4f}):", "",
             "| threshold | per-query p0 | cross-key false claims | 95% CI | own model detected | 95% CI |",
             "|---|---|---|---|---|---|"]
    for name, v in (("before: binomial p0", h["before"]), ("after: calibrated query_p0", h["after"])):
        lines.append(f"| {name} | {v['p0']:.3g} | {v['cross']['k']}/{v['cross']['n']} | "
                     f"{v['cross']['ci_low']:.3f}-{v['cross']['ci_high']:.3f} | {v['own']['k']}/{v['own']['n']} | "
                     f"{v['own']['ci_low']:.3f}-{v['own']['ci_high']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
