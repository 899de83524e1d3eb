"""False-positive rates and ROC curves on null models that never saw the key.

    python -m bench.tools.roc [RESULTS_DIR] [--independent 3] [--indep-steps 1500] [--other-worlds 1] [--align]
                              [--attack NAME ...]  # only these attacks' final checkpoints (default: every one)
    python -m bench.tools.roc [RESULTS_DIR] --tables-only     # re-derive the tables from the rows already written

For every method variant with K >= 2 seeds in RESULTS_DIR's records (one model, data, method and
verification settings; the attacks and the other collectors may differ, so a cheap
`metrics=verification attack=none` run adds a key), each seed's key i is verified, with the runs'
own verification settings and query seed, on:

* **positives**: its own watermarked model, and the final checkpoint of every attack run on it;
* **cross-key nulls**: the models marked with every other key j != i (the watermarked model and
  the final checkpoint of each of its attacks): K (K - 1) x (1 + attacks) entries, free since the
  models exist;
* **independent nulls** (`bench.tools.nulls`): UNets trained from other initialisations on the world's
  own data, their full fine-tunes and distillates (the final checkpoint and the one halfway
  through the schedule), and the base and fine-tuned UNets of worlds built with another
  `model.seed` (verified in their own pipeline);
* the runs' own nulls: the base model and the base model after each attack.

A run's checkpoints live in the cache of the machine that ran it: when the cache lacks some, the
ROC stops before any verification and names them; `--attack` then limits every attacked entry
(positives, cross-key and base+attack nulls) to the attacks named, and the summary's `attacks`
column says which were measured.

The test statistic is the method's own: -log10 of its p-value (the exact binomial test on the
voted bits for bit methods, the binomial test of the match count against p0 for the others). Per
method and positive set it writes AUC (Mann-Whitney), TPR at 1% and 0.1% empirical FPR (the
largest threshold that at most that fraction of nulls exceeds; with fewer than 1,000 nulls the
0.1% point is the threshold above every null), the empirical FPR at the configured target (the
fraction of nulls the verdict calls watermarked) with its exact Clopper-Pearson interval, for
per-query tests (AIAO, ActiveMark) the per-query match rate on the nulls against the p0 the p-value
assumes, and the raw score distributions (AIAO's cosines, ActiveMark's per-query bit scores, the
bit methods' voted matches), into RESULTS_DIR/roc/: `roc_summary.csv` / `.md`, per method
`<model>_<method>.csv` (every verification) and `roc_<model>_<method>.png`, `fpr_by_null_kind.csv` /
`.md` (the same FPR and per-query rate for each kind of null: base, cross-key, independent,
other-world), and per world
`null_models_<model>.csv` / `.md`: the null models' owner-domain loss and FID beside the base
model's, so a reader sees how good the nulls are.

With `--align`, every model (positives and nulls alike) is first aligned to the key's own watermarked
model, as the owner's aligned verification does (`metrics.verification.align=activations`), and the
files go to RESULTS_DIR/roc_aligned/: the false-positive rates with alignment, beside the unaligned
ones, show whether the matching manufactures evidence.

Every verification is one row of `<model>_<method>.csv` (with its group's settings and the raw scores), and
the tables and plots are computed from those files alone (`tables`), so `--tables-only` re-derives a
committed roc/ folder without its models (tests/test_reference.py does).

The entries are keys x models, not independent draws: one key meets many models and one model
many keys, so the Clopper-Pearson interval is nominal.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bench.cache import write_text_atomic
from bench.tools.cli import command, write_table
from bench.analysis.aggregate import clopper_pearson, group_records
from bench.errors import BenchError
from bench.record import load_records

log = logging.getLogger("bench.tools.roc")
NULL_ATTACKS = ("full_ft", "distill")


def statistic(summary: dict) -> float:
    return -math.log10(max(summary["p_value"], 1e-300))


def verification_label(rec: dict) -> str:
    """The verification settings a record's verdicts used, as `k=v` pairs (what a ROC group must share)."""
    v = rec["config"]["metrics"]["verification"]
    return ", ".join(f"{k}={v[k]}" for k in sorted(v) if k != "_target_")


def groups(records: list[dict]) -> dict[tuple, dict[int, list[dict]]]:
    """(model, data, method, verification settings) -> {seed: that seed's complete records with a key}.

    Runs whose other collectors differ (FID on or off) share a group: the verdicts depend only on the
    verification settings, so a cheap `metrics=verification attack=none` run adds a key to a group."""
    flat = group_records(records, ("model", "data", "method", verification_label, lambda r: r["seed"]),
                         lambda r: r["status"] == "complete" and bool(r.get("models")) and bool(r.get("key"))
                         and bool(r["key"].get("folder")) and "verification" in r["config"].get("metrics", {}))
    out: dict[tuple, dict[int, list[dict]]] = {}
    for (*group, seed), recs in flat.items():
        out.setdefault(tuple(group), {})[seed] = recs
    return {k: v for k, v in out.items() if len(v) >= 2}


FIX = "bench.tools.roc instantiates only the harness's own components and reads only files inside the cache it was given."


def checked(rec: dict) -> dict:
    """`rec`, if the components bench.tools.roc instantiates from it are the harness's own (`bench.untrusted.component`)."""
    from bench.untrusted import component
    where = f"The record {rec['run_id']}'s config"
    for g in ("model", "data", "method"):
        component(rec["config"][g], g, f"{where}.{g}", FIX)
    component(rec["config"]["metrics"]["verification"], "metrics", f"{where}.metrics.verification", FIX)
    return rec


class Verifier:
    """Verification of any (key, model) pair with one method group's settings, through the verify cache."""

    def __init__(self, rec: dict, cache, world, align: bool = False):
        from omegaconf import OmegaConf

        from bench.run.runner import build
        cfg = OmegaConf.create(rec["config"])  # checked by measure()
        if align:  # the owner aligns every suspect to the key's own watermarked model first
            cfg.metrics.verification.align = "activations"
        self.method = build(cfg.method, "method")
        self.verification = build(cfg.metrics.verification, "metrics")
        self.cache, self.world, self.data_cfg = cache, world, rec["config"]["data"]

    def __call__(self, rec: dict, ref, world=None) -> dict:
        from bench.metrics.base import EvalContext
        from methods.base import Key
        from bench.untrusted import confined, hex_address
        address = hex_address(rec["key"]["address"], f"The record {rec['run_id']}'s key.address", FIX)
        folder = self.cache.path_for("embed", address) / "key"  # the key lives in the user's cache, by its address
        if not folder.is_dir():
            folder = confined(rec["key"]["folder"], self.cache.root, f"The record {rec['run_id']}'s key.folder", FIX)
        ctx = EvalContext(world=world or self.world, method=self.method, key=Key.load(folder),
                          key_address=rec["key"]["address"], cache=self.cache, seed=rec["seed"],
                          data_key=self.data_cfg, base=ref, watermarked=model_ref(self.cache, rec["models"]["watermarked"]),
                          attacked=[], null_attacked=[])
        return self.verification.verify_one(ctx, ref)


def model_ref(cache, entry: dict):
    """A model a record lists; its weights file must lie inside the cache."""
    from bench.metrics.base import ModelRef
    from bench.untrusted import confined
    weights = confined(entry["weights"], cache.root, "A record's model weights", FIX) if entry.get("weights") else None
    return ModelRef(entry["address"], weights)


def attacked(rec: dict, attacks: list[str] | None) -> bool:
    """Whether a record's attack made a model the ROC verifies: it has checkpoints past the source and, where
    `--attack` names attacks, is one of them (by its label, e.g. `full_ft[steps=1]`, or its name, `full_ft`)."""
    return len(rec["models"]["checkpoints"]) > 1 and (not attacks or bool(attack_names(rec) & set(attacks)))


def attack_names(rec: dict) -> set[str]:
    """The names `--attack` matches a record's attack by: its label (`full_ft[steps=1]`) and its name (`full_ft`)."""
    label = rec["identity"]["labels"]["attack"]
    return {label, label.split("[")[0]}


def marked_models(cache, recs: list[dict], attacks: list[str] | None = None) -> list[tuple[str, object]]:
    """(role, model) for one seed: the watermarked model and every (named) attack's final checkpoint."""
    out = [("watermarked", model_ref(cache, recs[0]["models"]["watermarked"]))]
    for rec in recs:
        if attacked(rec, attacks):
            out.append((f"attacked:{rec['identity']['labels']['attack']}", model_ref(cache, rec["models"]["checkpoints"][-1])))
    return out


def base_nulls(cache, recs: list[dict], attacks: list[str] | None = None) -> list[tuple[str, object]]:
    """The runs' own nulls for one seed: the base model and the base after each (named) attack (final checkpoint)."""
    out = [("base", model_ref(cache, {"address": recs[0]["models"]["null_checkpoints"][0]["address"]}))]
    for rec in recs:
        if attacked(rec, attacks) and len(rec["models"]["null_checkpoints"]) > 1:
            out.append((f"base+{rec['identity']['labels']['attack']}", model_ref(cache, rec["models"]["null_checkpoints"][-1])))
    return out


def other_world(model_cfg: dict, k: int) -> dict:
    """The model config of the k-th other world: the records' world spec with `model.seed` + 1 + k, built on this
    machine (a shipped world, model=tiny, is one build of seed 0: `model.source=build` builds another seed)."""
    spec = {**model_cfg, "seed": model_cfg["seed"] + 1 + k}
    if "source" in spec:
        spec["source"] = "build"
    return spec


def independent_nulls(rec: dict, cache, world, n: int, steps: int, n_worlds: int) -> list[tuple[str, object, object]]:
    """(role, model, world) for the independent null models (built once, cached)."""
    from omegaconf import OmegaConf

    from bench.config import compose
    from bench.metrics.base import ModelRef
    from bench.tools.nulls import independent_unet
    from bench.run.runner import build
    from bench.run.stages import attack_stage, world_stage

    attacks = {a: compose([f"model={rec['model']}", f"attack={a}"]).attack for a in NULL_ATTACKS}
    out = []

    def attacked(w, ref, role):
        for name, node in attacks.items():
            refs, _ = attack_stage(cache, w, ref, build(node, "attack"), OmegaConf.to_container(node, resolve=True),
                                   rec["config"]["data"])
            out.append((f"{role}+{name}", refs[-1], w))
            if len(refs) > 2:  # and the checkpoint halfway through the schedule: another model, free to verify
                mid = refs[len(refs) // 2]
                out.append((f"{role}+{name}@{mid.step}", mid, w))

    for k in range(n):
        ref = independent_unet(cache, world, seed=5000 + k, steps=steps)
        out.append(("independent", ref, world))
        attacked(world, ref, "independent")
    for k in range(n_worlds):
        model_cfg = OmegaConf.create(other_world(rec["config"]["model"], k))
        other, _ = world_stage(cache, build(model_cfg, "model"), OmegaConf.to_container(model_cfg), world.data,
                               world.device)
        out.append(("other-world", ModelRef(other.address), other))
        attacked(other, ModelRef(other.address), "other-world")
    return out


def null_quality(rec: dict, cache, world, nulls: list[tuple[str, object, object]]) -> pd.DataFrame:
    """How good the null models are: owner-domain held-out denoising loss and FID of the base model, the
    independent UNets and the other worlds' base models (not their attacks), at seed 0 with the run's sizes."""
    from bench.metrics.base import EvalContext
    from bench.metrics.fid import FID
    from bench.metrics.utility import Utility
    ev = rec["config"]["model"]["eval"]
    fid, util = FID(n_images=ev["n_images"], n_ref=ev.get("n_ref")), Utility(n_items=ev.get("n_utility", 256))
    base = model_ref(cache, {"address": rec["models"]["null_checkpoints"][0]["address"]})
    rows = []
    for role, ref, w in [("base", base, world)] + [(r, m, w) for r, m, w in nulls if "+" not in r]:
        ctx = EvalContext(world=w, method=None, key=None, key_address="", cache=cache, seed=0,
                          data_key=rec["config"]["data"], base=ref, watermarked=ref, attacked=[], null_attacked=[])
        loss = util.losses(ctx, ref)
        rows.append({"role": role, "model": ref.address, "owner_loss": loss["owner_loss"],
                     "attacker_loss": loss["attacker_loss"], "fid": fid.fid(ctx, ref)})
    return pd.DataFrame(rows)


def roc_points(pos: np.ndarray, neg: np.ndarray) -> pd.DataFrame:
    """(threshold, fpr, tpr) for 'detected when the statistic exceeds the threshold'."""
    thresholds = np.unique(np.concatenate([pos, neg, [np.inf]]))[::-1]
    rows = [(math.inf, 0.0, 0.0)] + [(t, float((neg >= t).mean()), float((pos >= t).mean())) for t in thresholds[1:]]
    return pd.DataFrame(rows, columns=["threshold", "fpr", "tpr"])


def tpr_at(pos: np.ndarray, neg: np.ndarray, alpha: float) -> float:
    """TPR at the largest threshold that at most a fraction `alpha` of the nulls exceed."""
    allowed = int(math.floor(alpha * len(neg)))
    tau = np.sort(neg)[::-1][min(allowed, len(neg) - 1)]
    return float((pos > tau).mean())


def summary_rows(rows: pd.DataFrame, target: float) -> list[dict]:
    """Per positive set: n, AUC, TPR at 1% and 0.1% FPR, and the empirical FPR at the target with its interval."""
    neg = rows[~rows.positive]
    fpr = null_rates(neg)
    out = []
    for role, pos in rows[rows.positive].groupby("role"):
        p, q = pos.statistic.to_numpy(), neg.statistic.to_numpy()
        auc = float(stats.mannwhitneyu(p, q).statistic / (len(p) * len(q)))
        out.append({"positives": role, "n_pos": len(p), "auc": auc, "tpr@1%": tpr_at(p, q, 0.01),
                    "tpr@0.1%": tpr_at(p, q, 0.001), "tpr@target": float(pos.detected.mean()),
                    "target_fpr": target, **fpr})
    return out


def null_rates(neg: pd.DataFrame) -> dict:
    """How often the verdict fired on these nulls (with its Clopper-Pearson interval), and the per-query rate."""
    k, n = int(neg.detected.sum()), len(neg)
    lo, hi = clopper_pearson(k, n)
    return {"n_null": n, "null_detected": k, "fpr": k / n, "fpr_ci_low": lo, "fpr_ci_high": hi,
            **query_calibration(neg)}


def null_kind(role: str) -> str:
    """base | cross | independent | other-world: the kind of null a row's role names."""
    return role.split("+")[0].split(":")[0]


def by_null_kind(rows: pd.DataFrame) -> list[dict]:
    """The empirical FPR (and, for per-query tests, the per-query match rate) on each kind of null separately:
    cross-key nulls (marked by another owner) and independent ones (never marked) answer different questions."""
    neg = rows[~rows.positive]
    return [{"null_kind": kind, **null_rates(part)} for kind, part in neg.groupby(neg.role.map(null_kind), sort=True)]


def query_calibration(neg: pd.DataFrame) -> dict:
    """For per-query tests (AIAO, ActiveMark): the per-query match rate on the nulls against the p0 the
    p-value assumes, with its Clopper-Pearson interval. p0 is valid when the observed rate is not above it."""
    if "query_p0" not in neg or neg.query_p0.isna().all():
        return {}
    k, n = int(neg.matches.sum()), int(neg.n_queries.sum())
    lo, hi = clopper_pearson(k, n)
    return {"query_p0": float(neg.query_p0.max()), "null_query_matches": k, "null_queries": n,
            "null_query_rate": k / n, "null_query_rate_ci_low": lo, "null_query_rate_ci_high": hi}


def plot(rows: pd.DataFrame, path: Path, title: str, target: float | None = None) -> None:
    """ROC (left), the test statistic of every verification by kind of model with the target's threshold
    (middle: where a flat ROC hides the margins), and the raw per-query scores or voted matches (right)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    neg = rows[~rows.positive]
    fig, (left, mid, right) = plt.subplots(1, 3, figsize=(15, 3.8))
    for role, pos in rows[rows.positive].groupby("role"):
        pts = roc_points(pos.statistic.to_numpy(), neg.statistic.to_numpy())
        left.step(pts.fpr, pts.tpr, where="post", label=f"{role} (n={len(pos)})")
    left.set(xscale="symlog", xlim=(0, 1), ylim=(0, 1.02), xlabel=f"FPR (n null = {len(neg)})", ylabel="TPR",
             title=f"{title}: ROC on -log10 p")
    left.set_xscale("symlog", linthresh=1e-3)
    left.legend(fontsize=6)
    kinds = [(f"+ {role}", part) for role, part in rows[rows.positive].groupby("role")]
    kinds += [(f"null: {kind}", part) for kind, part in neg.groupby(neg.role.map(null_kind))]
    for y, (name, part) in enumerate(kinds):
        jitter = np.random.default_rng(y).uniform(-0.25, 0.25, len(part))
        mid.scatter(part.statistic, y + jitter, s=8, alpha=0.6, color="C1" if name.startswith("+") else "C0")
    if target is not None:
        mid.axvline(-math.log10(target), color="k", lw=0.8, ls="--", label=f"target FPR {target:g}")
        mid.legend(fontsize=6)
    mid.set_yticks(range(len(kinds)), [f"{name} ({len(part)})" for name, part in kinds], fontsize=7)
    mid.set(xscale="symlog", xlim=(0, max(float(rows.statistic.max()), 1.0) * 1.5),
            xlabel="-log10 p (the test statistic)", title="every verification")
    scores = [(r, s) for r, s in zip(rows.role, rows.scores) if isinstance(s, list)]
    if scores:  # per-query raw scores (cosines, bit scores)
        null_s = [x for (r, s), pos in zip(scores, rows.positive) if not pos for x in s]
        pos_s = [x for (r, s), pos in zip(scores, rows.positive) if pos and r == "watermarked" for x in s]
        right.hist(null_s, bins=40, alpha=0.6, density=True, label=f"nulls ({len(null_s)} queries)")
        right.hist(pos_s, bins=40, alpha=0.6, density=True, label=f"watermarked ({len(pos_s)} queries)")
        right.set(xlabel="per-query score", title="raw scores")
    else:  # bit methods: the voted matches, the test statistic
        right.hist(rows[~rows.positive].matches, bins=20, alpha=0.6, density=True, label="nulls")
        right.hist(rows[rows.role == "watermarked"].matches, bins=20, alpha=0.6, density=True, label="watermarked")
        right.set(xlabel="voted bits matching the key", title="test statistic")
    right.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def missing_weights(cache, found: dict, attacks: list[str] | None) -> dict[str, int]:
    """{attack: how many of the models the ROC would verify have no weights file in the cache}: a run's checkpoints
    live in the cache of the machine that ran it, so records copied from elsewhere may lack them."""
    missing: dict[str, int] = {}
    for seeds in found.values():
        for recs in seeds.values():
            for role, ref in marked_models(cache, recs, attacks) + base_nulls(cache, recs, attacks):
                if ref.weights is not None and not Path(ref.weights).is_file():
                    name = role.split(":", 1)[-1].split("+", 1)[-1]
                    missing[name] = missing.get(name, 0) + 1
    return missing


def measure(results: Path, n_indep: int, indep_steps: int, n_worlds: int, only: list[str], cache_dir: Path | None = None,
            skip_bad: bool = False, align: bool = False, attacks: list[str] | None = None) -> pd.DataFrame:
    """Verify every key on positives and nulls; write the per-method files and return the summary."""
    import torch
    from tqdm.auto import tqdm

    from bench.cache import Cache
    from bench.run.runner import build
    from bench.run.stages import world_stage
    from bench.world.base import resolve_device
    from omegaconf import OmegaConf

    torch.set_grad_enabled(True)
    found = groups([checked(r) for r in load_records(results, skip_bad=skip_bad)
                    if r["status"] == "complete" and "verification" in r["config"].get("metrics", {})])
    if only:
        found = {k: v for k, v in found.items() if k[2].split("[")[0] in only}
    if not found:
        raise BenchError(f"No method in {results / 'records'} has complete records for two or more seeds of one "
                         "configuration, so there are no cross-key nulls. Run the seeds first, e.g. python -m bench "
                         "experiment=seeds5 method=watermarkdm attack=full_ft -m")
    cache = Cache(cache_dir or results / "cache")  # the user's cache, never a path a record names
    if attacks:
        ran = set().union(*(attack_names(r) for seeds in found.values() for recs in seeds.values() for r in recs))
        if unknown := sorted(set(attacks) - ran):
            raise BenchError(f"--attack {', '.join(unknown)}: no record of the measured methods ran that attack (they "
                             f"ran {', '.join(sorted(ran))}). Name attacks from that list, or drop --attack for all.")
    if missing := missing_weights(cache, found, attacks):
        have = sorted({r["identity"]["labels"]["attack"] for seeds in found.values() for recs in seeds.values()
                       for r in recs if attacked(r, None)} - set(missing))
        raise BenchError(f"The cache {cache.root} lacks the weights of {sum(missing.values())} model(s) the ROC would "
                         f"verify ({', '.join(f'{a}: {n}' for a, n in sorted(missing.items()))}): those runs "
                         "were made with another cache (a run's models stay in the cache of the machine that ran it). "
                         "Re-run those runs with this cache (the attack stage rebuilds the same addresses; "
                         "metrics=verification keeps it cheap), point --cache at theirs, or measure only the attacks "
                         "whose checkpoints are here (--attack NAME, repeatable): "
                         f"{' '.join(f'--attack {a}' for a in have) or 'none of them are'}.")
    out_dir = results / ("roc_aligned" if align else "roc")
    out_dir.mkdir(parents=True, exist_ok=True)
    worlds, nulls = {}, {}
    for (model, data, method, verification), seeds in sorted(found.items()):
        first = next(iter(seeds.values()))[0]
        cfg = OmegaConf.create(first["config"])
        wkey = (model, data)
        if wkey not in worlds:
            world, _ = world_stage(cache, build(cfg.model, "model"), first["config"]["model"], build(cfg.data, "data"),
                                   resolve_device("auto"))
            worlds[wkey] = world
            nulls[wkey] = independent_nulls(first, cache, world, n_indep, indep_steps, n_worlds)
            quality = null_quality(first, cache, world, nulls[wkey])
            write_table(out_dir, f"null_models_{model}", quality, ".4g")
            log.info("null models' quality (%s):\n%s", model, quality.to_markdown(index=False, floatfmt=".4g"))
        world, verify = worlds[wkey], Verifier(first, cache, worlds[wkey], align)
        if not verify.method.verifiable:
            continue
        rows = []
        for seed, recs in tqdm(sorted(seeds.items()), desc=f"roc {method}"):
            cases = [(role, ref, None, True) for role, ref in marked_models(cache, recs, attacks)]
            cases += [(f"cross:{role.split(':')[0]}", ref, None, False) for other, orecs in seeds.items() if other != seed
                      for role, ref in marked_models(cache, orecs, attacks)]
            cases += [(role, ref, None, False) for role, ref in base_nulls(cache, recs, attacks)]
            cases += [(role, ref, w, False) for role, ref, w in nulls[wkey]]
            for role, ref, w, positive in cases:
                s = verify(recs[0], ref, w)
                rows.append({"key_seed": seed, "role": role, "model": ref.address, "positive": positive,
                             "statistic": statistic(s), "p_value": s["p_value"], "detected": s["detected"],
                             "matches": s.get("matches"), "scores": s.get("scores"),
                             "bit_acc": s.get("bit_acc"), "verification_rate": s.get("verification_rate"),
                             "n_queries": s.get("n_queries"), "query_p0": s.get("null_match_prob")})
        df = pd.DataFrame(rows).assign(group_model=model, group_data=data, group_method=method,
                                       group_verification=verification, target_fpr=verify.verification.target_fpr)
        df["scores"] = df.scores.map(json.dumps)  # per-query scores, for the plot's right panel
        write_text_atomic(out_dir / f"{model}_{method}.csv", df.to_csv(index=False))
    return tables(out_dir)


VERIFICATIONS = "the per-method verification rows (<model>_<method>.csv)"


def tables(out_dir: Path) -> pd.DataFrame:
    """roc_summary, fpr_by_null_kind (.csv, .md) and the plots from the verification rows `measure` wrote into
    `out_dir`: no model is loaded, so a committed roc/ folder re-derives its tables (`--tables-only`)."""
    summary, kinds = [], []
    for path in sorted(out_dir.glob("*.csv")):
        if path.name.startswith(("roc_summary", "fpr_by_null_kind", "null_models_")):
            continue
        df = pd.read_csv(path)
        if "group_method" not in df:
            raise BenchError(f"'{path}' is not one of {VERIFICATIONS} written by this version of bench.tools.roc "
                             "(it lacks the group columns). Measure again: python -m bench.tools.roc RESULTS_DIR")
        df["scores"] = (df.scores if "scores" in df else pd.Series([None] * len(df))).map(
            lambda v: json.loads(v) if isinstance(v, str) else None)
        first = df.iloc[0]
        model, data, method, verification = (first[f"group_{k}"] for k in ("model", "data", "method", "verification"))
        target = float(first.target_fpr)
        plot(df, out_dir / f"roc_{path.stem}.png", f"{model} / {method}", target)
        n_keys = df.key_seed.nunique()
        for row in by_null_kind(df):
            kinds.append({"model": model, "method": method, "n_keys": n_keys, "target_fpr": target, **row})
        for row in summary_rows(df, target):
            summary.append({"model": model, "data": data, "method": method, "verification": verification, **row,
                            "n_keys": n_keys, "attacks": attacks_in(df),
                            "null_kinds": ", ".join(sorted(set(df[~df.positive].role.map(null_kind))))})
    if not summary:
        raise BenchError(f"'{out_dir}' holds none of {VERIFICATIONS}. Run python -m bench.tools.roc RESULTS_DIR first.")
    table, per_kind = pd.DataFrame(summary), pd.DataFrame(kinds)
    write_table(out_dir, "roc_summary", table)
    write_table(out_dir, "fpr_by_null_kind", per_kind)
    return table


def attacks_in(df: pd.DataFrame) -> str:
    """The attacks whose final checkpoints a method's rows include (positives 'attacked:<attack>')."""
    return ", ".join(sorted({r.split(":", 1)[1] for r in df[df.positive].role if r.startswith("attacked:")})) or "none"


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", nargs="?", default="results")
    parser.add_argument("--independent", type=int, default=3, help="independently trained UNets (default 3)")
    parser.add_argument("--indep-steps", type=int, default=1500, help="their training steps (default 1500)")
    parser.add_argument("--other-worlds", type=int, default=1, help="worlds built with another model.seed (default 1)")
    parser.add_argument("--method", action="append", default=[], help="only these methods (repeatable)")
    parser.add_argument("--attack", action="append", default=[], help="only these attacks' final checkpoints "
                        "(positives, cross-key and base+attack nulls; repeatable; default every attack the records ran)")
    parser.add_argument("--cache", type=Path, default=None, help="the cache holding the runs' models (default: "
                        "RESULTS_DIR/cache)")
    parser.add_argument("--skip-bad", action="store_true", help="leave out (and name) files that are not records")
    parser.add_argument("--tables-only", action="store_true", help="no models: re-derive the tables and plots from "
                        "the verification rows already in RESULTS_DIR/roc (or roc_aligned with --align)")
    parser.add_argument("--align", action="store_true", help="align every model to the key's watermarked model before "
                        "verifying (metrics.verification.align=activations); writes RESULTS_DIR/roc_aligned/")
    args = parser.parse_args(argv)
    if min(args.independent, args.other_worlds) < 0 or args.indep_steps < 1:
        raise BenchError("--independent and --other-worlds must be >= 0 and --indep-steps >= 1.")
    from bench.world.tiny import WARMUP
    if args.independent and args.indep_steps * WARMUP == 1:  # train_unet's OneCycleLR ends its warm-up at step 0
        raise BenchError("--indep-steps 20 cannot train the independent UNets: torch's OneCycleLR with the world's 5% "
                         "warm-up would end its warm-up at step 0 and divide by zero. Use 19 or 21 steps.")
    if args.tables_only and args.attack:
        raise BenchError("--attack chooses the models to verify, and --tables-only verifies none: the tables are "
                         "re-derived from the rows already written. Drop one of the two.")
    if args.tables_only:
        table = tables(Path(args.results_dir) / ("roc_aligned" if args.align else "roc"))
    else:
        table = measure(Path(args.results_dir), args.independent, args.indep_steps, args.other_worlds, args.method,
                        args.cache, args.skip_bad, args.align, args.attack)
    print(table.to_markdown(index=False, floatfmt=".3g"))
    return 0


main = command(_main)


if __name__ == "__main__":
    sys.exit(main())
