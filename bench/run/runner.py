"""One run, top to bottom: world -> embed -> attack -> evaluate -> record.

Every component is instantiated (and so validated) before any work starts; a finished run is
recognised by its record and skipped; each stage is cached by content address, so a sweep
embeds each method once and a re-run does no training.
"""
from __future__ import annotations

import logging
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from bench.cache import Cache
from bench.errors import BenchError, ConfigError
from bench.metrics.base import EvalContext, ModelRef
from bench.identity import check_label_collisions, keep_defaults, plan, without_labels
from bench.record import load_records, provenance, read_record, record_path, write_record
from bench.run.samples import write_grid
from bench.run.stages import (attack_stage, embed_seconds, embed_stage, evaluate_stage, key_commitment, key_folder,
                               world_stage)
from bench.world.base import resolve_device

log = logging.getLogger(__name__)


def build(node: DictConfig, group: str):
    """Instantiate a config node (its `label`, a display name, is not a constructor argument); turn
    constructor errors into one-paragraph ConfigErrors."""
    if "label" in node:
        node = node.copy()
        OmegaConf.set_struct(node, False)
        node.pop("label")
    check_types(node, group)
    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, BenchError):
            raise cause from None
        raise ConfigError(f"The '{group}' config could not be instantiated: {cause or err}. Check the keys you "
                          f"overrode against conf/{group}/ (`python -m bench --help` lists the options).") from None


def check_types(node: DictConfig, group: str) -> None:
    """Refuse a text value where the component's constructor defaults to a number (`attack.lr=abc`), naming the key,
    before the constructor fails on it with a message that does not."""
    import inspect

    from hydra.utils import get_object
    try:  # a class or a function (get_class logged an error for every function target)
        params = inspect.signature(get_object(str(node.get("_target_")))).parameters
    except Exception:  # a target hydra will refuse with its own message
        return
    for name, param in params.items():
        default = param.default
        if isinstance(default, bool) or not isinstance(default, (int, float)) or name not in node:
            continue
        value = node[name]
        if isinstance(value, str) or isinstance(value, bool):
            raise ConfigError(f"{group}.{name} must be a number (its default is {default!r}), not {value!r}. Give a "
                              f"number, e.g. {group}.{name}={default!r}.")


def _ref(ref: ModelRef, cache: Cache) -> dict:
    """A model of the run as the record lists it: its address, checkpoint and budget, and its weights file
    relative to the cache (None: the base model), so tools (bench.tools.roc) can verify it with other keys."""
    weights = str(Path(ref.weights).resolve().relative_to(cache.root.resolve())) if ref.weights else None
    return {"address": ref.address, "step": ref.step, "budget": ref.budget, "weights": weights}


@contextmanager
def timed(timings: dict, stage: str):
    """Record the seconds a stage took in `timings[stage]`: wall-clock `seconds`, and `cpu_seconds`, the CPU time
    of this process (all its threads), which a paused job or one sharing its cores with others does not inflate."""
    start, cpu = time.perf_counter(), time.process_time()
    timings[stage] = {"seconds": None}
    yield timings[stage]
    timings[stage].update(seconds=round(time.perf_counter() - start, 3), cpu_seconds=round(time.process_time() - cpu, 3))


def run(cfg: DictConfig, the_plan: dict | None = None) -> dict:
    """Run (or skip, if already complete) the experiment `cfg`; return its record."""
    the_plan = the_plan or plan(cfg)
    full = OmegaConf.to_container(cfg, resolve=True)
    rid, config = the_plan["run_id"], without_labels(full)  # stage addresses never see a label
    path = record_path(Path(cfg.paths.records_dir), rid)
    previous = read_record(path)
    if previous and previous["status"] == "complete":
        log.info("%s is complete; nothing to do (%s)", rid, path)
        return previous
    device = resolve_device(cfg.device)
    model, data = build(cfg.model, "model"), build(cfg.data, "data")
    method, attack = build(cfg.method, "method"), build(cfg.attack, "attack")
    collectors = {name: build(node, "metrics") for name, node in cfg.metrics.items()}
    logger = build(cfg.logger, "logger") if "_target_" in cfg.logger else None
    check_label_collisions([the_plan] + load_records(Path(cfg.paths.records_dir), skip_bad=True))
    names = {"model": the_plan["names"]["model"], "method": the_plan["names"]["method"],
             "attack": the_plan["names"]["attack"], "seed": cfg.seed}

    torch.manual_seed(cfg.seed)
    cache, timings, models = Cache(cfg.paths.cache_dir), {}, {}
    cache.sweep_stale()  # temporary folders of killed jobs (a live job's lock protects its own)
    record = {"run_id": rid, **names, "status": "running", "identity": the_plan["identity"],
              "versions": the_plan["versions"], "config": full, "provenance": provenance()}
    try:
        with timed(timings, "world") as t:
            world, t["built"] = world_stage(cache, model, config["model"], data, device)
            record["provenance"]["world_fingerprint"] = world.meta.get("fingerprint")  # which build (None: pretrained)
        with timed(timings, "embed") as t:
            marked, key, key_address, t["built"] = embed_stage(cache, world, method, config["method"], cfg.seed,
                                                               config["data"])
            folder = key_folder(cache, key_address)
            record["key"] = {"address": key_address, "folder": str(folder) if folder else None,
                             "commitment": key_commitment(folder)}
        with timed(timings, "attack") as t:
            card = method.card(config["method"])  # what the attacker may know of the method (never the key)
            attacked, built = attack_stage(cache, world, marked, attack, config["attack"], config["data"], card)
            start, cpu = time.perf_counter(), time.process_time()  # the same attack on the unmarked model (shared by
            # every method of a seed)
            null_attacked, null_built = attack_stage(cache, world, ModelRef(world.address), attack, config["attack"],
                                                     config["data"], card)
            t.update(built=built or null_built, null_seconds=round(time.perf_counter() - start, 3),
                     null_cpu_seconds=round(time.process_time() - cpu, 3))
        with timed(timings, "evaluate") as t:
            ctx = EvalContext(world=world, method=method, key=key, key_address=key_address, cache=cache, seed=cfg.seed,
                              data_key=config["data"], base=null_attacked[0], watermarked=marked,
                              attacked=attacked, null_attacked=null_attacked)
            t["collectors"] = {}
            metrics, curves = evaluate_stage(ctx, collectors, t["collectors"])
            write_grid(ctx, path.parent)  # samples.png beside the record (the HTML report shows it)
            models = {"base": ctx.base.address, "watermarked": marked.address, "attacked": attacked[-1].address}
            record["models"] = {"watermarked": _ref(marked, cache), "checkpoints": [_ref(r, cache) for r in attacked],
                                "null_checkpoints": [_ref(r, cache) for r in null_attacked]}
        metrics["embed_seconds"] = {"value": embed_seconds(marked), "higher_is_better": False}
        record.update(status="complete", metrics=metrics, curves=curves)
    except BenchError:
        raise
    except Exception as err:  # a failed run is recorded, not lost: the sweep goes on
        log.exception("run %s failed", rid)
        record.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
    record["timings"] = timings
    write_record(path, record)
    keep_defaults(the_plan)
    log.info("record: %s (%s)", path, record["status"])
    if logger:
        logger.log_record(record, models, cache.root)
    return record
