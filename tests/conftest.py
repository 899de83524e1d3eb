"""Session fixtures. All tests share one content-addressed cache, so the micro world is built once."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One cache for the whole session: stages built by one test are reused by the others. Under pytest-xdist
    (scripts/test.sh runs one worker per core) the workers share it too: the harness's per-artifact file locks make
    the first worker to need a stage build it while the others wait, as the suite's two workers do."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return tmp_path_factory.mktemp("cache")
    shared = tmp_path_factory.getbasetemp().parent / "cache"  # the session's folder, above each worker's own
    shared.mkdir(exist_ok=True)
    return shared




@pytest.fixture(scope="session")
def micro_world(shared_cache):
    """The micro world (test size), built once per session in the shared cache, on CPU."""
    import torch
    from omegaconf import OmegaConf

    from bench.cache import Cache
    from bench.run.runner import build
    from bench.run.stages import world_stage
    from tests.helpers import SHRINK, compose_cfg

    cfg = compose_cfg(SHRINK)
    model, data = build(cfg.model, "model"), build(cfg.data, "data")
    return world_stage(Cache(shared_cache), model, OmegaConf.to_container(cfg.model, resolve=True), data,
                       torch.device("cpu"))[0]


@pytest.fixture(scope="session")
def embedded(micro_world, shared_cache):
    """`embedded(name, *overrides)`: the method YAML `name` embedded on the micro world (seed 0, test size) through the
    harness's own `embed_stage`, once per session in the shared cache (the same address a `python -m bench` run of
    that config uses); returns a namespace with the config, method, marked model, key, key address and card settings.
    Extra overrides (e.g. `hydra.searchpath=...` for a method outside conf/) make another entry."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from bench.cache import Cache
    from bench.identity import without_labels
    from bench.run.runner import build
    from bench.run.stages import embed_stage
    from tests.helpers import SHRINK, compose_cfg

    made: dict = {}

    def get(name: str, *overrides: str) -> SimpleNamespace:
        if (name, overrides) not in made:
            cfg = compose_cfg([*SHRINK, f"method={name}", *overrides])
            config = without_labels(OmegaConf.to_container(cfg, resolve=True))
            method = build(cfg.method, "method")
            marked, key, key_address, _ = embed_stage(Cache(shared_cache), micro_world, method, config["method"],
                                                      cfg.seed, config["data"])
            made[name, overrides] = SimpleNamespace(cfg=cfg, config=config, method=method, marked=marked, key=key,
                                                    key_address=key_address, seed=cfg.seed)
        return made[name, overrides]

    return get
