"""Session fixtures. All tests share one content-addressed cache, so the micro world is built once."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One cache for the whole session: stages built by one test are reused by the others."""
    return tmp_path_factory.mktemp("cache")




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
