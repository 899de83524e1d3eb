"""ActiveMark's per-query null match rate (`method.query_p0`), calibrated on cross-key nulls, and its effect.

    .venv/bin/python scripts/calibrate_activemark.py [--out results/activemark_calibration] [--no-run] [--check]
        [--calibration-seeds 100-105] [--seeds 0-4] [--cache results/cache] [OVERRIDE ...]

A model marked by another ActiveMark owner carries this owner's injected message to the read token too
(methods/activemark.py: its trained blocks pass any injected token on), so the binomial p0 under-states the
per-query match rate on that null. This script measures the rate and states the threshold it implies:

1. **Calibration.** ActiveMark embedded at `--calibration-seeds` (never the reported seeds) with
   `method.query_p0=null`, every key verified with all its hold-out queries (`n_holdout`) on every other
   calibration seed's watermarked model (`bench.tools.roc`, cross-key nulls only). The match counts vary
   from pair to pair far more than a binomial allows, so a beta-binomial is fitted to them (maximum
   likelihood): its mean per-query rate is query_p0 and its intra-model correlation query_rho, each rounded
   up to two significant figures (a larger rho is a heavier tail). The pairs are keys x models, not
   independent draws; the fit is stated as such.
2. **Before and after, held out.** The same at `--seeds` with the world's own number of queries: the
   cross-key verdicts at the binomial p0 (before) and at max(p0, query_p0) (after), each a rate over the
   K (K - 1) pairs with its exact interval, and the same for the keys on their own watermarked models (what
   the stricter threshold costs the owner). The same on the calibration pairs themselves (in-sample).

Writes OUT/calibration.json and OUT/calibration.md (the tables), with the runs' records under OUT/calibration
and OUT/heldout. `--no-run` re-derives the tables from the verifications already written (the committed
reference: results/reference/activemark_calibration/); `--check` exits 1 unless conf/method/activemark.yaml's
query_p0 (at this scale) is the calibrated value. Extra arguments go to every `python -m bench` run (e.g.
model=micro for a quick look).
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import numpy as np
from scipy import optimize
from scipy.stats import betabinom, binom

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.analysis.aggregate import clopper_pearson  # noqa: E402
from bench.cache import write_json_atomic  # noqa: E402


def seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def run(results: Path, cache: Path, seed_list: list[int], extra: list[str], queries: str | None) -> None:
    """ActiveMark with query_p0=null, attack=none, verification only, at these seeds (cached stages are reused)."""
    argv = [sys.executable, "-m", "bench", "method=activemark", "attack=none", "metrics=verification",
            "method.query_p0=null", "method.query_rho=null", f"seed={','.join(map(str, seed_list))}", f"paths.results_dir={results}",
            f"paths.cache_dir={cache}", *extra, "-m"]
    if queries:
        argv.insert(-1, f"metrics.verification.n_queries={queries}")
    subprocess.run(argv, cwd=ROOT, check=True)


def verifications(results: Path, cache: Path, reuse: bool) -> pd.DataFrame:
    """Every key on every watermarked model of its group (bench.tools.roc's rows; no independent nulls). With `reuse`
    the rows already written are read back (how the committed reference figures are re-derived without models)."""
    if not (reuse and list((results / "roc").glob("*_activemark.csv"))):
        from bench.tools.roc import measure
        measure(results, 0, 1, 0, ["activemark"], cache)
    [csv] = sorted((results / "roc").glob("*_activemark.csv"))
    rows = pd.read_csv(csv)
    return rows[rows.role.isin(["watermarked", "cross:watermarked"])]


def rate(k: int, n: int) -> dict:
    lo, hi = clopper_pearson(k, n)
    return {"k": k, "n": n, "rate": k / n if n else math.nan, "ci_low": lo, "ci_high": hi}


def round_up(x: float, digits: int = 2) -> float:
    scale = 10 ** (digits - 1 - math.floor(math.log10(x)))
    return math.ceil(x * scale) / scale


def fit(k: np.ndarray, n: np.ndarray) -> tuple[float, float]:
    """(mean, intra-model correlation) of the beta-binomial maximising the likelihood of counts k of n."""
    def nll(log_ab):
        a, b = np.exp(log_ab)
        return -betabinom.logpmf(k, n, a, b).sum()
    a, b = np.exp(optimize.minimize(nll, [0.0, 2.0], method="Nelder-Mead").x)
    return a / (a + b), 1 / (a + b + 1)


def p_values(rows: pd.DataFrame, p0: float, rho: float | None) -> np.ndarray:
    """The verifier's p-value for each row's match count (bench.stats: binomial, or beta-binomial with rho)."""
    if rho is None:
        return binom.sf(rows.matches - 1, rows.n_queries, p0)
    return betabinom.sf(rows.matches - 1, rows.n_queries, p0 * (1 - rho) / rho, (1 - p0) * (1 - rho) / rho)


def verdicts(rows: pd.DataFrame, p0: float, target: float, rho: float | None = None) -> dict:
    """Detected (p-value of the match count <= target) on positives and cross-key nulls."""
    detected = p_values(rows, p0, rho) <= target
    own, cross = rows.role == "watermarked", rows.role == "cross:watermarked"
    return {"p0": p0, "rho": rho, "own": rate(int(detected[own].sum()), int(own.sum())),
            "cross": rate(int(detected[cross].sum()), int(cross.sum()))}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "activemark_calibration")
    parser.add_argument("--cache", type=Path, default=ROOT / "results" / "cache", help="the stage cache (shared with "
                        "other runs of the same world: its FID reference and base model are reused)")
    parser.add_argument("--calibration-seeds", default="100-105")
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--target-fpr", type=float, default=1e-3)
    parser.add_argument("--no-run", action="store_true", help="no runs: re-read the verifications already under --out "
                        "(OUT/*/roc/*_activemark.csv), or verify the records there again if there are none")
    parser.add_argument("--check", action="store_true", help="exit 1 unless the YAML holds the calibrated value")
    args, extra = parser.parse_known_args(argv)
    calib, held = args.out / "calibration", args.out / "heldout"
    if not args.no_run:
        run(calib, args.cache, seeds(args.calibration_seeds), extra, "${method.n_holdout}")
        run(held, args.cache, seeds(args.seeds), extra, None)
    cal = verifications(calib, args.cache, args.no_run)
    cross = cal[cal.role == "cross:watermarked"]
    measured = rate(int(cross.matches.sum()), int(cross.n_queries.sum()))
    mean, rho = fit(cross.matches.to_numpy(), cross.n_queries.to_numpy())
    query_p0, query_rho = round_up(mean), round_up(rho)
    rows = verifications(held, args.cache, args.no_run)
    p0 = float(rows.query_p0.max())  # the binomial p0: the runs had query_p0=null
    p0_cal = float(cal.query_p0.max())
    figures = {"calibration": {"seeds": args.calibration_seeds, "keys": int(cal.key_seed.nunique()),
                               "pairs": len(cross), "queries": measured, "query_p0": query_p0,
                               "query_rho": query_rho, "fit": {"mean": mean, "rho": rho},
                               "pair_matches": sorted(int(m) for m in cross.matches),
                               "queries_per_verification": int(cal.n_queries.max()),
                               "in_sample_before": verdicts(cal, p0_cal, args.target_fpr),
                               "in_sample_after": verdicts(cal, max(p0_cal, query_p0), args.target_fpr, query_rho)},
               "heldout": {"seeds": args.seeds, "keys": int(rows.key_seed.nunique()),
                           "queries_per_verification": int(rows.n_queries.max()), "target_fpr": args.target_fpr,
                           "before": verdicts(rows, p0, args.target_fpr),
                           "after": verdicts(rows, max(p0, query_p0), args.target_fpr, query_rho)},
               "extra_overrides": extra}
    held_cross = rows[rows.role == "cross:watermarked"]
    figures["heldout"]["cross_queries"] = rate(int(held_cross.matches.sum()), int(held_cross.n_queries.sum()))
    write_json_atomic(args.out / "calibration.json", figures)
    (args.out / "calibration.md").write_text(markdown(figures))
    print(markdown(figures))
    if args.check:
        from omegaconf import OmegaConf
        conf = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "method" / "activemark.yaml"), resolve=False)
        got = (conf.get("query_p0"), conf.get("query_rho"))
        print(f"conf/method/activemark.yaml: (query_p0, query_rho) = {got}; calibrated: ({query_p0}, {query_rho})")
        return 0 if got == (f"${{scale:null,{query_p0},null}}", f"${{scale:null,{query_rho},null}}") else 1
    return 0


def markdown(f: dict) -> str:
    c, h = f["calibration"], f["heldout"]
    q = c["queries"]
    lines = [f"Calibration (seeds {c['seeds']}, {c['keys']} keys, {c['pairs']} cross-key pairs, every hold-out query): "
             f"{q['k']} of {q['n']} queries matched on models marked by another key, rate {q['rate']:.4f} "
             f"(95% CI {q['ci_low']:.4f}-{q['ci_high']:.4f}); per pair {c['pair_matches']} of "
             f"{c['queries_per_verification']}. Beta-binomial fit: mean {c['fit']['mean']:.4f}, intra-model correlation "
             f"{c['fit']['rho']:.4f}; query_p0 = {c['query_p0']:g}, query_rho = {c['query_rho']:g}.", "",
             f"Held out (seeds {h['seeds']}, {h['keys']} keys, {h['queries_per_verification']} queries per verification, "
             f"target FPR {h['target_fpr']:g}; cross-key per-query rate {h['cross_queries']['k']}/"
             f"{h['cross_queries']['n']} = {h['cross_queries']['rate']:.4f}):", "",
             "| null | per-query p0 | rho | cross-key false claims | 95% CI | own model detected | 95% CI |",
             "|---|---|---|---|---|---|---|"]
    rows = [("held out, before: binomial p0", h["before"]), ("held out, after: calibrated", h["after"]),
            (f"calibration seeds (in-sample, {c['queries_per_verification']} queries), before", c["in_sample_before"]),
            (f"calibration seeds (in-sample, {c['queries_per_verification']} queries), after", c["in_sample_after"])]
    for name, v in rows:
        rho = "binomial" if v["rho"] is None else f"{v['rho']:g}"
        lines.append(f"| {name} | {v['p0']:.3g} | {rho} | {v['cross']['k']}/{v['cross']['n']} | "
                     f"{v['cross']['ci_low']:.3f}-{v['cross']['ci_high']:.3f} | {v['own']['k']}/{v['own']['n']} | "
                     f"{v['own']['ci_low']:.3f}-{v['own']['ci_high']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
