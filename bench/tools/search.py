"""The worst-case attacker: the strongest removal an attack family allows within the utility budget, found by search.

    python -m bench.tools.search SPACE method=NAME [--trials N] [--seed S] [--name NAME] [OVERRIDES...]
    python -m bench.tools.search full_ft method=aiao                       # conf/search/full_ft.yaml, its N
    python -m bench.tools.search lora_ft method=sleepermark --trials 40
    python -m bench.tools.search full_ft method=roma debug=micro --trials 3    # a smoke search on the micro world
    python -m bench.tools.search --summary results     # the worst case per search, with its fresh-seed re-run

SPACE is `conf/search/<SPACE>.yaml` (or a path to such a YAML). It names the attack whose settings are searched,
the parameters and their ranges, the number of trials N, the objective and the utility budget (the file's
comments say each key's meaning; the tiny-world ranges go through `${scale:...}` like every attack setting).

Each trial is one ordinary run of the harness (`bench.run.runner.run`, world -> embed -> attack -> evaluate), with
the trial's `attack.<param>=<value>` overrides and the space's `run:` overrides (one checkpoint at the end of the
attack, and only the collectors the objective and the budget read). Its stages are cached like any run's: the
world and the embedding (the search's seed, `seed=0` unless overridden) are shared with the suite, and a trial
that was run before costs nothing.

* **Objective** (minimised: the attacker's side): `evidence`, the verifier's -log10 p at the final checkpoint
  (`verify/attacked/p_value`), or `strength`, bit accuracy / verification rate there.
* **Constraint**: the utility budget at the final checkpoint, `utility/attacked/<name> <= bound` for each entry of
  `constraints:` (by default the utility collector's own budget: owner-domain loss ratio and FID increase over
  the watermarked model). Optuna's TPE sampler receives the margins as the trial's constraints; a trial over
  budget is infeasible and is never the best, however low its evidence; a run that fails is a failed trial.
* **Sampling**: Optuna's TPE after 2 random trials, seeded per trial (`--seed` and the trial's number), so the
  proposals are a function of the seed and the results before them: a re-run with the same seed proposes the same
  trials, a search given more trials (`--trials`) goes on as one started with that N, and a killed search resumes
  where it stopped (SQLite storage; a trial that was running is re-run with its own parameters).
  One process per search folder (a file lock refuses a second).

Writes `<results_dir>/search/<NAME>/` (NAME defaults to `<method>-<SPACE>-s<seed>`):
  study.db                      Optuna's storage (the resume point)
  trials.csv / trials.md        every trial: its parameters, objective, utility figures, margins, feasibility, run id
  best_so_far.png               the best feasible objective against trials (infeasible trials marked)
  best.json                     the best feasible trial (null when none was feasible) and the search's settings
  conf/attack/<SPACE>_worst_<method>.yaml
                                the best feasible config as an ordinary attack variant (`defaults: [<attack>]`, its
                                `label:` naming it), and the command that re-runs it at fresh seeds
  records/                      the trials' records (the cache is the results folder's own)

Bad input (an empty space, N <= 0, a parameter the attack does not have, a constraint that names no utility metric
or whose collector does not run, method=none) is refused with one paragraph before any work.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

from bench.config import CONF
from bench.errors import BenchError, ConfigError, require
from bench.tools.cli import command, write_table

log = logging.getLogger("bench.tools.search")

SPACES = CONF / "search"
OBJECTIVES = {"evidence": "-log10 p of the verifier at the final checkpoint",
              "strength": "bit accuracy (bit methods) or verification rate at the final checkpoint"}
# utility/attacked/<name> figures a constraint may bound (each <= its bound), and the collectors they need
UTILITY_METRICS = {"owner_loss_ratio": ("utility",), "owner_loss_ratio_base": ("utility",),
                   "fid_increase": ("utility", "fid")}
SPEC_KEYS = {"low", "high", "log", "type", "choices", "list"}
MISSING = 1e12  # the margin of a budget figure a record does not hold (e.g. a failed FID): infeasible
P_FLOOR = 1e-300


# ---- the search space ------------------------------------------------------------------------------------------
def space_path(space: str) -> Path:
    """conf/search/<space>.yaml, or `space` itself when it is a YAML file."""
    path = Path(space)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    known = sorted(p.stem for p in SPACES.glob("*.yaml"))
    require((SPACES / f"{space}.yaml").is_file(),
            f"The search space {space!r} is neither a YAML file nor one of conf/search/ ({', '.join(known)}). Name "
            "one of those, or give the path to a YAML of the same form.")
    return SPACES / f"{space}.yaml"


def load_space(path: Path, cfg) -> dict:
    """The space YAML, resolved against the run config `cfg` (`${scale:...}`, `${metrics.utility...}`), checked."""
    from omegaconf import OmegaConf
    try:
        raw = OmegaConf.load(path)
    except Exception as err:
        raise ConfigError(f"The search space {path} is not readable YAML ({err}). Fix the file; conf/search/ has "
                          "examples.") from None
    root = OmegaConf.create({"model": {"scale": cfg.model.scale},
                             "metrics": OmegaConf.to_container(cfg.metrics, resolve=True), "search": raw})
    try:
        space = OmegaConf.to_container(root.search, resolve=True)
    except Exception as err:
        raise ConfigError(f"The search space {path} does not resolve against the run's config: {err}. Check its "
                          "${...} expressions against conf/.") from None
    require(isinstance(space, dict), f"The search space {path} must be a mapping (attack:, params:, ...).")
    return space


def check_space(space: dict, path: Path, cfg, trials: int) -> dict:
    """The checked search: attack, params (name -> spec), objective, constraints (name -> bound), run overrides."""
    where = f"The search space {path}"
    unknown = sorted(set(space) - {"attack", "trials", "objective", "constraints", "run", "params"})
    require(not unknown, f"{where} has unknown keys {unknown}: it may hold attack, trials, objective, constraints, "
            "run and params.")
    require(isinstance(trials, int) and not isinstance(trials, bool) and trials >= 1,
            f"The number of trials must be a positive integer (got {trials!r}): give --trials N with N >= 1, or "
            f"`trials:` in {path}.")
    params = space.get("params") or {}
    require(isinstance(params, dict) and params, f"{where} has no parameters to search (`params:` is empty). Give "
            "at least one, e.g. `params: {lr: {low: 1e-5, high: 1e-3, log: true}}`.")
    attack_keys = [k for k in cfg.attack if k not in ("_target_", "label")]
    for name, spec in params.items():
        require(name in attack_keys, f"{where} searches `{name}`, which attack={space['attack']} does not have. Its "
                f"settings are: {', '.join(attack_keys)}.")
        check_spec(name, spec, where)
    objective = space.get("objective", "evidence")
    require(objective in OBJECTIVES, f"{where}: objective must be one of {', '.join(OBJECTIVES)} (got {objective!r}).")
    constraints = {k: v for k, v in (space.get("constraints") or {}).items() if v is not None}
    require(constraints, f"{where} has no utility budget (`constraints:` is empty or every bound is null): a removal "
            f"counts only if the attacker keeps a useful model. Bound at least one of {', '.join(UTILITY_METRICS)}, "
            "e.g. `owner_loss_ratio: ${metrics.utility.max_owner_loss_ratio}`.")
    for name, bound in constraints.items():
        require(name in UTILITY_METRICS, f"{where}: the constraint `{name}` names no utility metric. A constraint "
                f"bounds one of {', '.join(UTILITY_METRICS)} (utility/attacked/<name> at the final checkpoint).")
        require(isinstance(bound, (int, float)) and not isinstance(bound, bool),
                f"{where}: the bound of `{name}` must be a number (got {bound!r}).")
        missing = [c for c in UTILITY_METRICS[name] if c not in cfg.metrics]
        require(not missing, f"{where}: the constraint `{name}` needs the {' and '.join(missing)} collector, which "
                "this search's runs do not have (check the space's `run:` and your metrics overrides).")
    require(objective != "evidence" or "verification" in cfg.metrics,
            f"{where}: the objective needs the verification collector, which this search's runs do not have.")
    return {"attack": space["attack"], "params": params, "objective": objective, "constraints": constraints,
            "run": [str(o) for o in space.get("run") or []], "trials": trials}


def check_spec(name: str, spec, where: str) -> None:
    require(isinstance(spec, dict), f"{where}: `{name}` must be a mapping such as {{low: 1e-5, high: 1e-3, log: true}} "
            f"or {{choices: [a, b]}} (got {spec!r}).")
    unknown = sorted(set(spec) - SPEC_KEYS)
    require(not unknown, f"{where}: `{name}` has unknown keys {unknown}; a parameter has low/high (with log, type: "
            "int|float, list), or choices.")
    if "choices" in spec:
        require(isinstance(spec["choices"], list) and spec["choices"],
                f"{where}: `{name}`'s choices must be a non-empty list (got {spec['choices']!r}).")
        require(all(c is None or isinstance(c, (bool, int, float, str)) for c in spec["choices"]),
                f"{where}: `{name}`'s choices must be numbers or strings (a list setting is a string in Hydra's "
                "override syntax, e.g. '[up_blocks,mid_block]').")
        return
    low, high = spec.get("low"), spec.get("high")
    require(all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) and low < high,
            f"{where}: `{name}` needs numbers low < high (got low={low!r}, high={high!r}).")
    require(not spec.get("log") or low > 0, f"{where}: `{name}` is log-uniform, so low must be positive (got {low}).")
    require(spec.get("type", "float") in ("int", "float"), f"{where}: `{name}`'s type must be int or float.")


def distributions(params: dict) -> dict:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    out = {}
    for name, spec in params.items():
        if "choices" in spec:
            out[name] = CategoricalDistribution(spec["choices"])
        elif spec.get("type") == "int":
            out[name] = IntDistribution(int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
        else:
            out[name] = FloatDistribution(float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))
    return out


def override_value(value, spec: dict) -> str:
    """A parameter value in Hydra's override syntax (`list: true` wraps it: the budget lists of weight edits)."""
    text = repr(value) if isinstance(value, float) else "null" if value is None else str(value).lower() \
        if isinstance(value, bool) else str(value)
    return f"[{text}]" if spec.get("list") else text


def trial_overrides(search: dict, params: dict) -> list[str]:
    return [f"attack.{k}={override_value(v, search['params'][k])}" for k, v in params.items()]


# ---- one trial: an ordinary run ---------------------------------------------------------------------------------
def composed(overrides: list[str]):
    """(config, group choices) of `overrides`, as the Hydra app would see them (its `hydra` node removed)."""
    from omegaconf import open_dict

    from bench.config import compose
    from bench.identity import GROUPS
    cfg = compose(overrides, return_hydra_config=True)
    choices = {g: cfg.hydra.runtime.choices.get(g) for g in (*GROUPS, "experiment")}
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def run_trial(overrides: list[str]) -> dict:
    """The record of the run `overrides` describe (cached stages, a complete record: no work)."""
    from bench.identity import plan
    from bench.run.runner import run
    cfg, choices = composed(overrides)
    return run(cfg, plan(cfg, choices, []))


def value(record: dict, name: str):
    entry = record.get("metrics", {}).get(name)
    return entry.get("value") if isinstance(entry, dict) else entry


def outcome(record: dict, search: dict) -> dict:
    """Objective, budget figures and margins of a trial's record (objective None: the run failed)."""
    out = {"run_id": record["run_id"], "status": record["status"]}
    p = value(record, "verify/attacked/p_value")
    strength = value(record, "verify/attacked/bit_acc")
    strength = value(record, "verify/attacked/verification_rate") if strength is None else strength
    out.update(p_value=p, strength=strength, detected=value(record, "verify/attacked/detected"))
    if record["status"] != "complete":
        out["objective"] = None
    elif search["objective"] == "evidence":
        out["objective"] = None if p is None else -math.log10(max(float(p), P_FLOOR))
    else:
        out["objective"] = None if strength is None else float(strength)
    margins = []
    for name, bound in search["constraints"].items():
        figure = value(record, f"utility/attacked/{name}")
        out[name] = figure
        margins.append(MISSING if figure is None else float(figure) - float(bound))
    out["margins"] = margins
    out["feasible"] = out["objective"] is not None and all(m <= 0 for m in margins)
    return out


# ---- the study ---------------------------------------------------------------------------------------------------
STARTUP = 2  # random trials before TPE models the results (not a function of N: a search extended to more trials
             # proposes what a search started with that N would have)


def comparable(settings: dict) -> dict:
    """What decides a search's trials: its settings less where they are written (the space file's location and the
    `paths.*` overrides; the space's content is in the settings), so that a search copied to another folder or
    machine (scripts/resume_from_reference.py) resumes there."""
    return {**{k: v for k, v in settings.items() if k not in ("trials", "space")},
            "overrides": [o for o in settings["overrides"] if not o.lstrip("+~").startswith("paths.")]}


def sampler(seed: int, number: int):
    """TPE seeded by (search seed, trial number): proposals depend on the seed and the trials before, never on how
    many processes the search took or on N."""
    import optuna
    return optuna.samplers.TPESampler(seed=seed * 100_003 + number, n_startup_trials=STARTUP)


def tell(study, trial_number: int, result: dict, seconds: float) -> None:
    """Record the trial's figures as user attributes and its budget margins as Optuna constraints (TPE reads them:
    a trial is feasible when every margin is <= 0), then its objective, or FAIL for a run that did not complete."""
    import optuna
    trial = optuna.trial.Trial(study, study.trials[trial_number]._trial_id)
    for key in ("run_id", "status", "p_value", "strength", "detected", "margins", "feasible",
                *[k for k in result if k in UTILITY_METRICS]):
        trial.set_user_attr(key, result.get(key))
    trial.set_user_attr("seconds", round(seconds, 3))
    for name, margin in zip(study.user_attrs["settings"]["constraints"], result.get("margins") or []):
        trial.set_constraint(name, margin)
    if result["objective"] is None:
        study.tell(trial_number, state=optuna.trial.TrialState.FAIL)
    else:
        study.tell(trial_number, result["objective"])


def rows(study, search: dict) -> list[dict]:
    import optuna
    out = []
    for t in study.trials:
        row = {"trial": t.number, "state": t.state.name}
        row.update({f"param:{k}": t.params.get(k) for k in search["params"]})
        row["objective"] = t.value if t.state == optuna.trial.TrialState.COMPLETE else None
        for key in ("p_value", "strength", *search["constraints"]):
            row[key] = t.user_attrs.get(key)
        for (name, bound), margin in zip(search["constraints"].items(), t.user_attrs.get("margins") or []):
            row[f"{name}<={bound:g}"] = margin <= 0
        row["feasible"] = bool(t.user_attrs.get("feasible"))
        row["seconds"] = t.user_attrs.get("seconds")
        row["run_id"] = t.user_attrs.get("run_id")
        out.append(row)
    return out


def best_row(table: list[dict]) -> dict | None:
    """The feasible trial of least objective (ties: the earliest); None when no trial is feasible."""
    feasible = [r for r in table if r["feasible"] and r["objective"] is not None]
    return min(feasible, key=lambda r: (r["objective"], r["trial"])) if feasible else None


def plot(table: list[dict], objective: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.cache import atomic_file
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    done = [r for r in table if r["objective"] is not None]
    ok = [r for r in done if r["feasible"]]
    over = [r for r in done if not r["feasible"]]
    ax.scatter([r["trial"] for r in ok], [r["objective"] for r in ok], s=14, label=f"within budget (n={len(ok)})")
    ax.scatter([r["trial"] for r in over], [r["objective"] for r in over], s=14, marker="x", color="grey",
               label=f"over budget (n={len(over)})")
    best, xs, ys = math.inf, [], []
    for r in sorted(table, key=lambda r: r["trial"]):
        if r["feasible"] and r["objective"] is not None:
            best = min(best, r["objective"])
        if best < math.inf:
            xs.append(r["trial"])
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="C3", label="best so far (within budget)")
    ax.set(xlabel="trial", ylabel=OBJECTIVES[objective].split(" at ")[0], title=path.parent.name)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def export(best: dict, search: dict, out: Path, name: str, base: list[str], seed: int) -> tuple[Path, str]:
    """The best trial's attack settings as conf/attack/<name>.yaml under `out`; (its path, the re-run command)."""
    from omegaconf import OmegaConf

    from bench.cache import write_text_atomic
    params = {k[len("param:"):]: v for k, v in best.items() if k.startswith("param:")}
    values = {}  # every attack override of the trial, parsed as its YAML value
    for override in [o for o in base + search["run"] if o.startswith("attack.")] + trial_overrides(search, params):
        key, _, text = override[len("attack."):].partition("=")
        values[key] = OmegaConf.to_container(OmegaConf.create(f"v: {text}"))["v"]
    body = OmegaConf.to_yaml(OmegaConf.create({"defaults": [search["attack"], "_self_"], "label": name, **values}))
    header = (f"# The worst case found by `python -m bench.tools.search` ({out.name}): trial {best['trial']}, the best "
              f"within the utility budget\n# ({search['objective']} {best['objective']:.4g} at the final checkpoint; "
              + ", ".join(f"{k} {best[k]:.4g}" for k in search["constraints"] if best.get(k) is not None) + ").\n")
    path = out / "conf" / "attack" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, header + body)
    others = [o for o in base + [o for o in search["run"] if not o.startswith("attack.")]
              if not o.startswith(("attack.", "seed="))]
    fresh = ",".join(str(seed + i) for i in range(1, 6))
    cmd = (f"python -m bench attack={name} {' '.join(others)} 'hydra.searchpath=[file://{out.resolve() / 'conf'}]' "
           f"seed={fresh} -m")
    return path, cmd


def _main(argv: list[str]) -> int | None:
    parser = argparse.ArgumentParser(prog="python -m bench.tools.search", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("space", nargs="?", help="conf/search/<SPACE>.yaml, or a path to a search-space YAML")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of every trial's run, e.g. method=aiao seed=0")
    parser.add_argument("--trials", type=int, default=None, help="N, the number of trials (default: the space's)")
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")
    parser.add_argument("--name", default=None, help="the search's folder under <results_dir>/search/")
    parser.add_argument("--summary", metavar="RESULTS_DIR", default=None,
                        help="instead of searching: the worst-case table of every search in RESULTS_DIR/search/ and "
                             "its exported attack's fresh-seed records (RESULTS_DIR/search/worst_case.csv / .md)")
    args = parser.parse_intermixed_args(argv)  # options anywhere among the overrides
    if args.summary is not None:
        require(Path(args.summary, "search").is_dir(), f"{args.summary} has no search/ folder: run a search first "
                "(python -m bench.tools.search SPACE method=NAME paths.results_dir=...).")
        table = worst_case(Path(args.summary))
        print(table.to_markdown(index=False, floatfmt=".3g") if len(table) else "no search has finished yet")
        return None
    require(args.space is not None, "Name a search space (conf/search/<SPACE>.yaml or a path), or give --summary.")
    import optuna
    from filelock import FileLock, Timeout

    from bench.cache import write_json_atomic
    path = space_path(args.space)
    bad = [o for o in args.overrides if o.split("=")[0].lstrip("+~") in ("attack", "hydra.sweeper")]
    if bad:
        raise ConfigError(f"{bad[0]!r}: a search's attack comes from its space ({path.name} names it); choose the "
                          "space instead, and give the attack's fixed settings as attack.<key>=<value>.")
    require("-m" not in args.overrides and "--multirun" not in args.overrides,
            "A search runs its trials itself: leave out -m.")
    space = load_space(path, composed(args.overrides)[0])  # resolved against the run config (scale, budget)
    require(isinstance(space.get("attack"), str), f"The search space {path} must name its attack (`attack: full_ft`).")
    base = [f"attack={space['attack']}", *args.overrides]
    run_cfg, choices = composed(base + [str(o) for o in space.get("run") or []])
    search = check_space(space, path, run_cfg, args.trials if args.trials is not None else space.get("trials", 20))
    method = choices.get("method")
    require(method != "none", "method=none has no mark to remove: search against a watermarking method, e.g. "
            "method=aiao.")
    seed = int(run_cfg.seed)
    name = args.name or f"{method}-{path.stem}-s{seed}"
    out = Path(run_cfg.paths.results_dir) / "search" / name
    out.mkdir(parents=True, exist_ok=True)
    records = out / "records"
    common = base + search["run"] + [f"paths.records_dir={records}"]

    lock = FileLock(str(out / ".search.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise BenchError(f"Another process is running the search in {out}. Wait for it, or give this one its own "
                         "--name.") from None
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = f"sqlite:///{(out / 'study.db').resolve()}"
        study = optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True)
        settings = {"space": str(path), "attack": search["attack"], "method": method, "objective": search["objective"],
                    "constraints": search["constraints"], "params": search["params"], "run": search["run"],
                    "overrides": args.overrides, "seed": args.seed, "run_seed": seed}
        previous = study.user_attrs.get("settings")
        if previous and comparable(previous) != comparable(settings):
            raise BenchError(f"The search in {out} was started with other settings ({previous}); these are "
                             f"{settings}. Give this search its own --name, or delete {out} to start over.")
        study.set_user_attr("settings", settings)
        dists = distributions(search["params"])
        log.info("search %s: %d trial(s) of attack=%s on method=%s, objective %s, budget %s; writing %s", name,
                 search["trials"], search["attack"], method, search["objective"], search["constraints"], out)
        from tqdm.auto import tqdm
        bar = tqdm(total=search["trials"], desc=f"search {name}", initial=sum(
            t.state.is_finished() for t in study.trials))
        while True:
            trials = study.trials
            stale = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]  # a killed process's trial
            if stale:
                number, params = stale[0].number, stale[0].params
            elif len(trials) >= search["trials"]:
                break
            else:
                study.sampler = sampler(args.seed, len(trials))
                trial = study.ask(dists)
                number, params = trial.number, trial.params
            start = time.perf_counter()
            try:
                result = outcome(run_trial(common + trial_overrides(search, params)), search)
            except ConfigError as err:  # a combination the attack refuses (its own checks): a failed trial, not the end
                log.warning("trial %d: %s is refused: %s", number, params, err)
                result = {"run_id": None, "status": f"refused: {err}", "objective": None, "margins": None,
                          "feasible": False}
            study.sampler = sampler(args.seed, number)
            tell(study, number, result, time.perf_counter() - start)
            table = rows(study, search)
            write_outputs(out, table, search)
            bar.update(1)
            log.info("trial %d: %s -> %s %.4g, %s", number, params, search["objective"],
                     math.nan if result["objective"] is None else result["objective"],
                     "within budget" if result["feasible"] else "over budget or failed")
        bar.close()
        table = rows(study, search)
        write_outputs(out, table, search)
        best = best_row(table)
        summary = {"settings": {**settings, "trials": search["trials"]}, "best": best,
                   "n_trials": len(table), "n_feasible": sum(r["feasible"] for r in table)}
        if best is None:
            log.info("no trial of %d stayed within the utility budget %s: this attack family found no useful removal "
                     "at this budget N", len(table), search["constraints"])
        else:
            yaml_path, cmd = export(best, search, out, f"{path.stem}_worst_{method}", args.overrides, seed)
            summary.update(export=str(yaml_path), rerun=cmd)
            log.info("best within budget: trial %d, %s %.4g (%s); exported %s\n  re-run at fresh seeds: %s",
                     best["trial"], search["objective"], best["objective"],
                     ", ".join(f"{k} {best[k]:.4g}" for k in search["constraints"] if best.get(k) is not None),
                     yaml_path, cmd)
        write_json_atomic(out / "best.json", summary)
    finally:
        lock.release()
    return None


def rerun_records(summary: dict, records: list[dict]) -> list[dict]:
    """A search's fresh-seed re-run (its `best.json` summary): the complete records of its exported attack, for its
    method, at seeds other than the search's own."""
    name, settings = Path(summary.get("export") or "").stem, summary["settings"]
    return [r for r in records if name and r.get("attack") == name and r.get("method") == settings["method"]
            and r.get("status") == "complete" and r.get("seed") != settings["run_seed"]]


def tied_at_best(trials_csv: Path, best: float) -> str:
    """'k of n': the feasible trials whose objective equals the best one. k = n says the objective did not tell the
    budget's trials apart (e.g. every one left the verifier's strongest evidence): the search found nothing that weakens
    the mark, and its "best" is merely the earliest trial within budget."""
    if not trials_csv.is_file():
        return ""
    import pandas as pd
    feasible = pd.read_csv(trials_csv).query("feasible == True")["objective"].astype(float)
    return f"{int((feasible - best).abs().le(1e-9 * max(1.0, abs(best))).sum())} of {len(feasible)}"


def worst_case(results_dir: Path, write: bool = True):
    """One row per search under `results_dir/search/` with its exported worst case: the search (N, feasible trials,
    the best config, its evidence and utility at the search seed, how many feasible trials tie with it) and the exported attack's records in
    `results_dir/records` at other seeds (the fresh-seed re-run): removed within the utility budget k/n with its exact
    95% interval, the median -log10 p and the owner-loss ratio and FID increase (mean, min-max) at the final
    checkpoint; and beside it the family's hand-set attack from the same records (`<family>` at default labels, the
    suite's runs), removed within budget at any of its checkpoints. Written as results_dir/search/worst_case.csv / .md
    (`write`)."""
    import statistics

    import pandas as pd

    from bench.analysis.aggregate import clopper_pearson, identity_of
    from bench.record import load_records
    records = load_records(Path(results_dir) / "records", skip_bad=True)

    def removed_in_budget(recs: list[dict]) -> str:
        """'k/n [low, high]': records removed within the utility budget, with the exact 95% interval."""
        k, n = sum(not value(r, "survived_within_budget") for r in recs), len(recs)
        low, high = clopper_pearson(k, n)
        return f"{k}/{n} [{low:.2f}, {high:.2f}]"

    rows = []
    for path in sorted((Path(results_dir) / "search").glob("*/best.json")):
        summary = json.loads(path.read_text())
        settings, best = summary["settings"], summary.get("best")
        row = {"method": settings["method"], "attack": settings["attack"], "search": path.parent.name,
               "trials (N)": summary["n_trials"], "within budget": summary["n_feasible"]}
        if best is None:
            rows.append({**row, "best config": "none within budget"})
            continue
        row["best config"] = ", ".join(f"{k[len('param:'):]}={v:.3g}" if isinstance(v, float) else
                                       f"{k[len('param:'):]}={v}" for k, v in best.items() if k.startswith("param:"))
        row["search seed: -log10 p"] = best["objective"] if settings["objective"] == "evidence" else None
        row["tied at best"] = tied_at_best(path.parent / "trials.csv", best["objective"])
        recs = rerun_records(summary, records)
        n = len(recs)
        row["re-run seeds"] = ",".join(str(r["seed"]) for r in sorted(recs, key=lambda r: r["seed"]))
        if n:
            row["removed within budget"] = removed_in_budget(recs)
            evidence = [-math.log10(max(float(value(r, "verify/attacked/p_value")), P_FLOOR)) for r in recs]
            row["median -log10 p"] = statistics.median(evidence)
            for figure in ("owner_loss_ratio", "fid_increase"):
                got = [value(r, f"utility/attacked/{figure}") for r in recs]
                got = [float(g) for g in got if g is not None]
                if got:
                    row[figure] = f"{statistics.mean(got):.3g} [{min(got):.3g}, {max(got):.3g}]"
        # beside it, the family's hand-set attack as the suite ran it (default labels): a trial is judged at its last
        # checkpoint only, the suite's run at the first of its checkpoints that is undetected and within budget
        wanted = {"attack": settings["attack"], "method": settings["method"], "metrics": "default"}
        hand = [r for r in records if r["status"] == "complete" and "survived_within_budget" in r.get("metrics", {})
                and all(identity_of(r)["labels"].get(k) == v for k, v in wanted.items())]
        row["hand-set attack: removed within budget"] = removed_in_budget(hand) if hand else ""
        rows.append(row)
    table = pd.DataFrame(rows)
    if rows and write:
        write_table(Path(results_dir) / "search", "worst_case", table)
    return table


def write_outputs(out: Path, table: list[dict], search: dict) -> None:
    import pandas as pd
    write_table(out, "trials", pd.DataFrame(table))
    plot(table, search["objective"], out / "best_so_far.png")


main = command(_main)

if __name__ == "__main__":
    sys.exit(main())
