"""What a run *is*: its identity, its variant labels, its component versions and its run id.

Computed from the composed config alone, before torch or any model code is imported, so that a
finished run is recognised in well under a second (`python -m bench` checks the record first).

* The **identity** is the hashed config (everything but `paths`, `logger`, `device`) with the
  seed replaced by a placeholder: every `${seed}` interpolation (the attacks' `seed: ${seed}`)
  turns into the placeholder too, so two runs have the same identity exactly when they are
  identical apart from `seed`. The leaderboard aggregates seeds within one identity only.
* A component's **label** is its YAML file's name plus the settings that differ from that file's
  defaults, e.g. `roma[r=1.0]` or `full_ft[lr=1e-05,steps=500]`; a `label:` key in the YAML (or on
  the command line) replaces it.
* **Versions**: every component's `version` class attribute, read from its source file (no import),
  plus the record format. They enter the run id, so bumping a version re-runs the job; the record
  carries them, so a cache address that moved is explained by the record.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bench.config import CONF
from bench.errors import ConfigError

SEED = "<seed>"
NOT_HASHED = ("paths", "logger", "device")      # settings that do not change a run's result
GROUPS = ("model", "data", "method", "attack", "metrics")
UNLABELLED = ("_target_", "label", "name")      # keys that never enter a label
# settings a group holds for other groups to read (the model's evaluation sizes, read by conf/metrics/): a change
# shows in the label of the group that reads it (metrics: `default[fid.n_images=8,...]`), not twice
READ_BY_OTHERS = ("eval.",)
RECORD_VERSION = 2  # 2: identity, labels and component versions in the record; versions in the run id


def digest(obj, n: int = 16) -> str:
    """A short stable hash of a JSON-able object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def check_seed(seed) -> int:
    """The seed as an int, or a one-paragraph ConfigError."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer (got {seed!r} of type {type(seed).__name__}). Seeds name the "
                          "owner's key, the attack's batches and the evaluation noise; give whole numbers, e.g. "
                          "seed=0 or seed=0,1,2,3,4 -m for five seeds.")
    if seed < 0:
        raise ConfigError(f"seed must be non-negative (got {seed}); e.g. seed=0,1,2,3,4 -m.")
    return seed


def resolved(cfg: DictConfig, seed=None) -> dict:
    """The hashed part of `cfg`, resolved; with `seed` given, the run's seed is replaced by it first."""
    if seed is not None:
        cfg = cfg.copy()
        OmegaConf.set_struct(cfg, False)
        cfg.seed = seed
    config = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in config.items() if k not in NOT_HASHED}


def flatten(node, prefix: str = "") -> dict:
    """Nested dicts as {'a.b': value}; lists stay values."""
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for k, v in node.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(flatten(v, key) if isinstance(v, dict) and v else {key: v})
    return out


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(_fmt(v) for v in value) + "]"
    return "null" if value is None else str(value)


def label(name: str, node: dict, default: dict | None) -> str:
    """`name[k=v,...]` for the settings of `node` that differ from `default` (its YAML's own values)."""
    if isinstance(node, dict) and node.get("label"):
        return str(node["label"])
    if default is None:
        return name
    mine, base = flatten(node), flatten(default)
    diffs = []
    for k in sorted(set(mine) | set(base)):
        if (k.split(".")[-1] in UNLABELLED or k.startswith(READ_BY_OTHERS)
                or mine.get(k, "<absent>") == base.get(k, "<absent>")):
            continue
        diffs.append(f"-{k}" if k not in mine else f"{k}={_fmt(mine[k])}")
    return f"{name}[{','.join(diffs)}]" if diffs else name


def compose_defaults(choices: dict, extra: list[str]) -> DictConfig | None:
    """The config with the same group choices and nothing else overridden (None if Hydra is unavailable)."""
    from bench.config import compose
    return compose([f"{g}={c}" for g, c in choices.items() if c is not None] + extra)


def conf_digest(extra: list[str]) -> str:
    """A digest of every YAML under conf/ and the extra search paths: what the defaults depend on."""
    folders = [CONF] + [Path(p.split("file://", 1)[1].rstrip("]").split(",")[0]) for p in extra if "file://" in p]
    files = sorted(f for d in folders if d.is_dir() for f in d.rglob("*.yaml"))
    return digest([[str(f), f.read_text()] for f in files])


def yaml_defaults(choices: dict, extra: list[str], cache_dir: str) -> tuple[dict, Path, bool]:
    """(the resolved config of these group choices with nothing overridden, where it is kept, found there).

    Composing it costs a Hydra compose per job (~0.7 s), so it is kept in `<cache>/defaults/`, keyed by
    the choices and the digest of the YAML files, and a re-run of a finished sweep composes nothing.
    `keep_defaults` writes it, once the run has been accepted (a refused config leaves no file)."""
    path = Path(cache_dir) / "defaults" / f"{digest([choices, extra, conf_digest(extra)])}.json"
    if path.is_file():
        return json.loads(path.read_text()), path, True
    return resolved(compose_defaults(choices, extra), SEED), path, False


def keep_defaults(the_plan: dict) -> None:
    """Store the plan's composed defaults for the next run of the same choices (atomically)."""
    path, defaults = the_plan.get("defaults_path"), the_plan.get("defaults")
    if path is None or defaults is None or Path(path).is_file():
        return
    from bench.cache import write_text_atomic
    write_text_atomic(Path(path), json.dumps(defaults, default=str))


def hydra_context() -> tuple[dict | None, list[str]]:
    """(group choices, search-path overrides) of the running Hydra app, or (None, []) outside one."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None, []
    hc = HydraConfig.get()
    choices = {g: hc.runtime.choices.get(g) for g in (*GROUPS, "experiment")}
    extra = [o for o in hc.overrides.hydra if o.startswith("hydra.searchpath")]
    return choices, extra


# ---- versions, read from source ----------------------------------------------------------------
def _module_file(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    return Path(spec.origin) if spec and spec.origin else None


@lru_cache(maxsize=None)
def declared_attribute(target: str, attr: str):
    """The literal value of class attribute `attr` of the class at dotted path `target`, read from its source (and
    its base classes' sources) without importing it (a component imports torch); None if no class in the chain
    sets it to something other than None."""
    module, _, cls = target.rpartition(".")
    path = _module_file(module)
    if path is None:
        raise ConfigError(f"_target_ {target!r} names a module that does not exist.")
    tree = ast.parse(path.read_text())
    imports = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                imports[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for stmt in node.body:
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(
                    stmt, ast.AnnAssign) else []
                if any(isinstance(t, ast.Name) and t.id == attr for t in targets) and stmt.value is not None:
                    value = ast.literal_eval(stmt.value)
                    if value is not None:
                        return value
            for base in node.bases:
                if isinstance(base, ast.Name):
                    parent = imports.get(base.id, f"{module}.{base.id}")
                    if parent.split(".")[0] in ("bench", "methods", "attacks"):
                        return declared_attribute(parent, attr)
            return None
    if cls in imports:  # re-exported
        return declared_attribute(imports[cls], attr)
    raise ConfigError(f"_target_ {target!r}: no class {cls} in {path}.")


def declared_version(target: str) -> str:
    """The `version` class attribute of the class at dotted path `target`, read from source; "1" if none sets one."""
    value = declared_attribute(target, "version")
    return "1" if value is None else str(value)


def versions(config: dict) -> dict:
    """Every component's version (by its `_target_`) and the record format's."""
    out = {g: declared_version(config[g]["_target_"]) for g in ("model", "data", "method", "attack")
           if isinstance(config.get(g), dict) and "_target_" in config[g] and g != "data"}
    out["metrics"] = {n: declared_version(c["_target_"]) for n, c in config.get("metrics", {}).items()
                      if isinstance(c, dict) and "_target_" in c}
    out["record"] = RECORD_VERSION
    return out


# ---- the plan of one run -------------------------------------------------------------------------
def without_labels(config: dict) -> dict:
    """`config` without the groups' `label` keys: what the stages' cache addresses use, so that giving a
    variant a label re-uses everything it computed before."""
    return {k: ({kk: vv for kk, vv in v.items() if kk != "label"} if k in GROUPS and isinstance(v, dict) else v)
            for k, v in config.items()}


def plan(cfg: DictConfig, choices: dict | None = None, extra: list[str] | None = None) -> dict:
    """Identity, labels, names, versions and run id of the run `cfg` describes (no heavy imports).

    `choices` (group -> YAML name) and `extra` (search-path overrides) come from the running Hydra app
    unless given; without them, names fall back to the components' own and labels to the names."""
    seed = check_seed(cfg.seed)
    config = resolved(cfg)
    identity_cfg = resolved(cfg, SEED)
    if choices is None:
        choices, extra = hydra_context()
    defaults, defaults_path = None, None
    if choices is not None:
        defaults, defaults_path, _ = yaml_defaults({g: choices.get(g) for g in GROUPS}, extra or [],
                                                   cfg.paths.cache_dir)
    names = {g: (choices or {}).get(g) or _fallback_name(g, config) for g in GROUPS}
    labels = {g: label(names[g], identity_cfg.get(g, {}), None if defaults is None else defaults.get(g, {}))
              for g in GROUPS}
    components = {g: digest(identity_cfg.get(g)) for g in GROUPS}
    group = digest(identity_cfg)
    vers = versions(config)
    rid = f"{names['model']}-{names['method']}-{names['attack']}-s{seed}-{digest([config, vers], 8)}"
    return {"run_id": rid, "seed": seed, "names": names, "config": config,
            "identity": {"group": group, "labels": labels, "components": components,
                         "experiment": (choices or {}).get("experiment")},
            "versions": vers, "defaults": defaults, "defaults_path": defaults_path}


def _fallback_name(group: str, config: dict) -> str:
    """A component's name outside a Hydra app: its `name` key, else its class name in lower case."""
    node = config.get(group, {})
    if isinstance(node, dict) and node.get("name"):
        return str(node["name"])
    target = node.get("_target_", group) if isinstance(node, dict) else group
    return target.rsplit(".", 1)[-1].lower() if group != "metrics" else "metrics"


def check_label_collisions(records: list[dict]) -> None:
    """Refuse a hand-given `label:` that names two different configurations of one group (or that equals
    the derived label of another configuration). Derived labels that coincide (a YAML default changed
    between runs) are not an error: the leaderboard tells them apart by a short hash."""
    by_label: dict[tuple, dict[str, tuple[bool, str]]] = {}
    for rec in records:
        ident = rec.get("identity")
        if not ident:
            continue
        for g in GROUPS:
            node = rec.get("config", {}).get(g)
            hand = isinstance(node, dict) and bool(node.get("label"))
            comps = by_label.setdefault((g, ident["labels"][g]), {})
            was_hand, run = comps.get(ident["components"][g], (False, rec.get("run_id", "?")))
            comps[ident["components"][g]] = (was_hand or hand, run)
    for (g, lab), comps in by_label.items():
        if len(comps) > 1 and any(hand for hand, _ in comps.values()):
            runs = ", ".join(run for _, run in comps.values())
            raise ConfigError(
                f"The {g} label {lab!r} names {len(comps)} different {g} configurations (runs {runs}), so their "
                f"leaderboard rows could not be told apart. A `label:` names one variant: give the new one another "
                f"label (or drop the key to get a label derived from its settings), or move the older records out "
                f"of the records folder.")
