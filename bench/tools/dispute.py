"""Ownership disputes: false claims with forged keys (with and without commitment), and colluding owners.

    python -m bench.tools.dispute [RESULTS_DIR] [--budgets 1,10] [--collusion 2,4] [--dual aiao,watermarkdm]
                                  [--method NAME] [--forger-seed 900] [--judge-seed 7] [--pirate-seed 800] [--cache DIR]

For every method variant with complete records at K >= 2 seeds of one configuration (the groups of
`bench.tools.roc`; a cheap `attack=none metrics=verification` run adds a seed):

* **False claims.** Targets: the base model and each seed's watermarked model, all models the forger
  never marked. The forger holds B keys of their own (`make_key` at seeds `--forger-seed`,
  `--forger-seed` + 1, ..., never a record's seed) and never sees an owner's key.
  - *committed*: the forger's keys were committed before the target existed, so they cannot depend on
    it; the claim succeeds when any of the B keys verifies on the target;
  - *uncommitted*: each of the B keys is rewritten from the target after the fact by the method's
    strongest forger (`WatermarkMethod.forge`: the bits the verifier decodes from the target, AIAO's
    targets set to the target's own responses, ActiveMark's messages set to what the target decodes),
    on the forger's own query seed; the claim succeeds when any forged key verifies.
  The judge verifies with their own query seed (`--judge-seed`) and the run's settings (queries, target
  FPR). Rate = successful claims / targets, per budget B, with its exact Clopper-Pearson 95% interval.
* **Collusion.** The seeds' watermarked models in consecutive groups of K (`--collusion`), each group
  averaged uniformly (weights); every member's key verified on the average with the member's own query
  seed; and the average's owner-domain loss over the members' mean (the utility collector's loss).

* **Dual claims** (`--dual`, the ambiguity attacks of Fan et al., NeurIPS 2019). A pirate embeds a key of
  their own (seed `--pirate-seed` + the owner's seed), with each method `--dual` names (`same`: the owner's
  own method), into each owner's
  watermarked model W, giving P (`embed_stage` on the world whose UNet is W). Each party's key is verified
  on W and on P, each with its own query seed. Both marks may verify on P; the dispute is decided by W,
  which the owner can show predates P: the pirate's key should not verify on it.

Writes RESULTS_DIR/dispute/false_claims.csv / .md, collusion.csv / .md and dual_claims.csv / .md (the
raw rows beside them as *_raw.csv). Forged keys, averages and
verdicts are cached by content, so a re-run costs nothing.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from bench.analysis.aggregate import clopper_pearson
from bench.cache import write_text_atomic
from bench.config import CONF
from bench.errors import BenchError
from bench.record import load_records
from bench.tools.cli import command, write_table
from bench.tools.roc import checked, groups, model_ref

log = logging.getLogger("bench.tools.dispute")


def _ints(text: str, what: str, minimum: int) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        values = []
    if not values or values[0] < minimum:
        raise BenchError(f"{what} must be a comma-separated list of integers >= {minimum} (got {text!r}), e.g. "
                         f"{'1,10' if minimum == 1 else '2,4'}.")
    return values


class Judge:
    """Verifies any key (by its content digest) on any model, with one method and one group's verification settings."""

    def __init__(self, rec: dict, cache, world, method_cfg: dict | None = None):
        from omegaconf import OmegaConf

        from bench.run.runner import build
        cfg = OmegaConf.create(rec["config"])
        self.method_cfg = method_cfg or rec["config"]["method"]
        self.method = build(OmegaConf.create(self.method_cfg), "method")
        self.verification = build(cfg.metrics.verification, "metrics")
        self.cache, self.world, self.data_cfg, self.rec = cache, world, rec["config"]["data"], rec

    def __call__(self, key, ref, seed: int) -> dict:
        from bench.commitment import key_digest
        from bench.metrics.base import EvalContext
        ctx = EvalContext(world=self.world, method=self.method, key=key, key_address=key_digest(key.tensors, key.meta, ""),
                          cache=self.cache, seed=seed, data_key=self.data_cfg, base=ref, watermarked=ref, attacked=[],
                          null_attacked=[])
        return self.verification.verify_one(ctx, ref)

    def context(self, ref, seed: int):
        from bench.metrics.base import EvalContext
        from methods.base import Key
        return EvalContext(world=self.world, method=self.method, key=Key(), key_address="", cache=self.cache, seed=seed,
                           data_key=self.data_cfg, base=ref, watermarked=ref, attacked=[], null_attacked=[])


def owner_key(cache, rec: dict):
    """The key of a record's run, from the user's own cache by its (checked) address: never a path a record names."""
    from bench.tools.roc import FIX
    from bench.untrusted import hex_address
    from methods.base import Key
    return Key.load(cache.path_for("embed", hex_address(rec["key"]["address"], f"The record {rec['run_id']}'s "
                                                        "key.address", FIX)) / "key")


def forger_key(judge: Judge, seed: int):
    """A key of the forger's own, made honestly at `seed`: `make_key`, or for a method whose embedding completes the
    key (`key_from_embedding`, e.g. ActiveMark's trained decoder) an ordinary embedding at that seed (cached)."""
    if not judge.method.key_from_embedding:
        return judge.method.make_key(seed, judge.world)
    from bench.run.stages import embed_stage
    return embed_stage(judge.cache, judge.world, judge.method, judge.method_cfg, seed, judge.data_cfg)[1]


def false_claims(judge: Judge, seeds: dict, cache, budgets: list[int], forger_seed: int, judge_seed: int) -> list[dict]:
    """One row per (target, budget, commitment): whether any of the first B keys verified."""
    from bench.metrics.base import ModelRef
    from tqdm.auto import tqdm
    world, method, n_queries = judge.world, judge.method, judge.verification.n_queries
    targets = [("base", ModelRef(world.address))]
    targets += [(f"watermarked:s{s}", model_ref(cache, recs[0]["models"]["watermarked"])) for s, recs in seeds.items()]
    keys = [forger_key(judge, forger_seed + b) for b in range(max(budgets))]
    rows = []
    ctx = judge.context(targets[0][1], judge_seed)
    for name, ref in tqdm(targets, desc=f"false claims {method.name}"):
        committed, forged = [], []
        with ctx.model(ref) as unet:
            for b, key in enumerate(keys):
                committed.append(judge(key, ref, judge_seed))
                forged.append(judge(method.forge(world, unet, key, n_queries, forger_seed + b), ref, judge_seed))
        for budget in budgets:
            for kind, verdicts in (("committed", committed), ("uncommitted", forged)):
                best = min(v["p_value"] for v in verdicts[:budget])
                rows.append({"target": name, "budget": budget, "commitment": kind, "best_p": best,
                             "claimed": any(v["detected"] for v in verdicts[:budget])})
    return rows


def average(cache, refs: list) -> object:
    """The uniform weight average of the models `refs`, cached by the members' addresses."""
    from safetensors.torch import load_file

    from bench.metrics.base import ModelRef
    from bench.world.base import write_weights
    members = sorted(r.address for r in refs)

    def build(tmp: Path) -> None:
        states = [load_file(str(r.weights)) for r in refs]
        write_weights({k: sum(s[k].float() for s in states) / len(states) for k in states[0]}, tmp / "unet.safetensors")
    art = cache.get_or_build("collusion", "1", {"members": members}, build)
    return ModelRef(art.address, art.path / "unet.safetensors")


def collusion(judge: Judge, seeds: dict, cache, sizes: list[int]) -> list[dict]:
    """One row per (K, group, member): does the member's own key verify on the group's average; its utility."""
    from bench.metrics.utility import Utility
    utility, rows, order = Utility(), [], sorted(seeds)
    for k in sizes:
        for start in range(0, len(order) - k + 1, k):
            group = order[start:start + k]
            refs = [model_ref(cache, seeds[s][0]["models"]["watermarked"]) for s in group]
            avg = average(cache, refs)
            ctx = judge.context(avg, group[0])
            loss = utility.losses(ctx, avg)["owner_loss"]
            member_loss = sum(utility.losses(ctx, r)["owner_loss"] for r in refs) / k
            for s in group:
                rec = seeds[s][0]
                key = owner_key(cache, rec)
                v = judge(key, avg, s)
                rows.append({"K": k, "group": "+".join(map(str, group)), "member": s, "detected": v["detected"],
                             "p_value": v["p_value"], "owner_loss_ratio": loss / member_loss})
    return rows


def method_config(rec: dict, name: str) -> dict:
    """conf/method/NAME.yaml resolved at the record's model scale (the record's own config for its own method)."""
    from omegaconf import OmegaConf

    from bench.config import compose
    from bench.untrusted import component
    cfg = compose([f"method={name}", f"model.scale={rec['config']['model']['scale']}"])
    return component(OmegaConf.to_container(cfg.method, resolve=True), "method", f"conf/method/{name}.yaml",
                     "Name a method of conf/method/.")


def dual_claims(judge: Judge, seeds: dict, cache, pirates: list[str], pirate_seed: int) -> list[dict]:
    """One row per (owner seed, pirate method): the pirate embeds their own key (`pirate_seed` + owner seed) into the
    owner's watermarked model W, giving P; each party's key verified on W and on P with the judge's settings and
    each party's own query seed. The owner's W predates P and carries no pirate mark: that asymmetry decides."""
    from omegaconf import OmegaConf
    from tqdm.auto import tqdm

    from bench.run.runner import build
    from bench.run.stages import embed_stage, world_stage
    rows = []
    for s, recs in tqdm(sorted(seeds.items()), desc=f"dual claims {judge.method.name}"):
        rec = recs[0]
        w = model_ref(cache, rec["models"]["watermarked"])
        owner = owner_key(cache, rec)
        model_cfg = {**rec["config"]["model"], "unet_weights": str(w.weights)}
        pirate_world, _ = world_stage(cache, build(OmegaConf.create(model_cfg), "model"), model_cfg,
                                      judge.world.data, judge.world.device)
        for name in pirates:
            # "same": the owner's own method config (a variant stays that variant)
            pirate = Judge(rec, cache, judge.world, rec["config"]["method"] if name == "same" else method_config(rec, name))
            p, pirate_key, _, _ = embed_stage(cache, pirate_world, pirate.method, pirate.method_cfg, pirate_seed + s,
                                              judge.data_cfg)
            row = {"owner_seed": s, "pirate": "same" if name == "same" else name, "pirate_seed": pirate_seed + s}
            for who, j, key, seed in (("owner", judge, owner, s), ("pirate", pirate, pirate_key, pirate_seed + s)):
                for model, ref in (("W", w), ("P", p)):
                    v = j(key, ref, seed)
                    row[f"{who}_on_{model}"], row[f"{who}_on_{model}_p"] = v["detected"], v["p_value"]
            rows.append(row)
    return rows


def rates(df: pd.DataFrame, by: list[str], hit: str) -> pd.DataFrame:
    out = []
    for keys, part in df.groupby(by, sort=True):
        k, n = int(part[hit].sum()), len(part)
        lo, hi = clopper_pearson(k, n)
        out.append({**dict(zip(by, keys if isinstance(keys, tuple) else (keys,))), "hits": k, "n": n, "rate": k / n,
                    "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(out)


def measure(results: Path, budgets: list[int], sizes: list[int], only: list[str], forger_seed: int, judge_seed: int,
            cache_dir: Path | None = None, pirates: list[str] = (), pirate_seed: int = 800) -> dict[str, pd.DataFrame]:
    import torch

    from bench.cache import Cache
    from bench.run.runner import build
    from bench.run.stages import world_stage
    from bench.world.base import resolve_device
    from omegaconf import OmegaConf

    torch.set_grad_enabled(True)
    found = groups([checked(r) for r in load_records(results)
                    if r["status"] == "complete" and "verification" in r["config"].get("metrics", {})])
    # the owner's plain verification: runs verified with alignment (bench.tools.roc --align's question) are left out
    found = {k: v for k, v in found.items() if (not only or k[2].split("[")[0] in only) and "align=activations" not in k[3]}
    if not found:
        raise BenchError(f"No method in {results / 'records'} has complete records for two or more seeds of one "
                         "configuration. Run the seeds first, e.g. python -m bench method=watermarkdm attack=none "
                         "metrics=verification seed=0,1,2,3,4 -m")
    if any(s in range(forger_seed, forger_seed + max(budgets)) for seeds in found.values() for s in seeds):
        raise BenchError(f"The forger's seeds {forger_seed}..{forger_seed + max(budgets) - 1} include a record's seed; "
                         "the forger must not hold an owner's key. Pass --forger-seed beyond the records' seeds.")
    cache, claims, colluded, duals, worlds = Cache(cache_dir or results / "cache"), [], [], [], {}
    for (model, data, method, verification), seeds in sorted(found.items()):
        first = next(iter(seeds.values()))[0]
        if (model, data) not in worlds:
            cfg = OmegaConf.create(first["config"])
            worlds[model, data] = world_stage(cache, build(cfg.model, "model"), first["config"]["model"],
                                              build(cfg.data, "data"), resolve_device("auto"))[0]
        judge = Judge(first, cache, worlds[model, data])
        if not judge.method.verifiable:
            continue
        label = {"model": model, "method": method, "n_keys": len(seeds)}
        claims += [{**label, **row} for row in false_claims(judge, seeds, cache, budgets, forger_seed, judge_seed)]
        colluded += [{**label, **row} for row in collusion(judge, seeds, cache, [k for k in sizes if k <= len(seeds)])]
        duals += [{**label, **row} for row in dual_claims(judge, seeds, cache, list(pirates), pirate_seed)]
    return {"false_claims": pd.DataFrame(claims), "collusion": pd.DataFrame(colluded), "dual_claims": pd.DataFrame(duals)}


def tables(raw: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The rate tables from the raw rows alone (so a committed dispute/ folder re-derives them: readme_tables)."""
    claims, colluded, duals = raw["false_claims"], raw["collusion"], raw["dual_claims"]
    claim_rates = rates(claims, ["model", "method", "commitment", "budget"], "claimed") if len(claims) else pd.DataFrame()
    collusion_rates = pd.DataFrame()
    if len(colluded):
        collusion_rates = rates(colluded, ["model", "method", "K"], "detected")
        ratio = colluded.groupby(["model", "method", "K"]).owner_loss_ratio.agg(["median", "min", "max"]).reset_index()
        collusion_rates = collusion_rates.merge(ratio.rename(columns={"median": "owner_loss_ratio_median",
                                                                      "min": "owner_loss_ratio_min",
                                                                      "max": "owner_loss_ratio_max"}))
    dual_rates = pd.DataFrame()
    if len(duals):  # per (method, pirate): how often each party's key verifies on each model
        cells = [f"{who}_on_{m}" for who in ("owner", "pirate") for m in ("W", "P")]
        dual_rates = pd.concat([rates(duals.assign(cell=c, hit=duals[c]), ["model", "method", "pirate", "cell"], "hit")
                                for c in cells], ignore_index=True)
    return {"false_claims": claim_rates, "collusion": collusion_rates, "dual_claims": dual_rates}


def read_raw(folder: Path) -> dict[str, pd.DataFrame]:
    """The raw rows of a dispute/ folder (an empty frame for a table it does not have)."""
    return {name: pd.read_csv(folder / f"{name}_raw.csv") if (folder / f"{name}_raw.csv").is_file() else pd.DataFrame()
            for name in ("false_claims", "collusion", "dual_claims")}


def write(results: Path, raw: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The rate tables (and the raw rows beside them) into RESULTS_DIR/dispute/."""
    out = results / "dispute"
    out.mkdir(parents=True, exist_ok=True)
    made = tables(raw)
    for name, table in made.items():
        if not len(raw[name]):
            continue
        write_text_atomic(out / f"{name}_raw.csv", raw[name].to_csv(index=False))
        write_table(out, name, table)
    return made


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", nargs="?", default="results")
    parser.add_argument("--budgets", default="1,10", help="forger budgets B: keys tried per target (default 1,10)")
    parser.add_argument("--collusion", default="2,4", help="group sizes K of averaged copies (default 2,4)")
    parser.add_argument("--method", action="append", default=[], help="only these methods (repeatable)")
    parser.add_argument("--forger-seed", type=int, default=900, help="the forger's first key seed (default 900)")
    parser.add_argument("--judge-seed", type=int, default=7, help="the judge's query seed (default 7)")
    parser.add_argument("--dual", default="", help="pirate methods for dual claims, e.g. same,watermarkdm (same: the "
                        "owner's own method; default: none); each pirate embeds a key of its own into each owner's "
                        "watermarked model")
    parser.add_argument("--pirate-seed", type=int, default=800, help="the pirates' first key seed (default 800)")
    parser.add_argument("--cache", type=Path, default=None, help="the runs' cache (default: RESULTS_DIR/cache)")
    args = parser.parse_args(argv)
    results = Path(args.results_dir)
    budgets, sizes = _ints(args.budgets, "--budgets", 1), _ints(args.collusion, "--collusion", 2)
    pirates = [p for p in args.dual.split(",") if p.strip()]
    unknown = [p for p in pirates if p != "same" and not (CONF / "method" / f"{p}.yaml").is_file()]
    if unknown:
        raise BenchError(f"--dual names {unknown}, which are not methods in conf/method/ "
                         f"({sorted(f.stem for f in (CONF / 'method').glob('*.yaml'))}).")
    raw = measure(results, budgets, sizes, args.method, args.forger_seed, args.judge_seed, args.cache, pirates,
                  args.pirate_seed)
    for table in write(results, raw).values():
        if len(table):
            print(table.to_markdown(index=False, floatfmt=".3g"))
    return 0


main = command(_main)

if __name__ == "__main__":
    sys.exit(main())
