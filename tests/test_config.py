"""Every option of every config group composes and instantiates; --help lists the groups."""
from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.utils import instantiate

from bench.errors import ConfigError
from bench.runner import build
from tests.helpers import CONF, ROOT, compose_cfg

GROUPS = ["model", "data", "method", "attack", "metrics"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_instantiates(group, option):
    cfg = compose_cfg([f"{group}={option}"])
    node = cfg[group]
    if group == "metrics":
        built = {name: instantiate(n) for name, n in node.items()}
        assert built and all(hasattr(c, "compute") for c in built.values())
    elif group == "data" and "roots" in node:  # reads the user's folders: without them, a clear refusal
        with pytest.raises(ConfigError, match=r"data\.roots\.\w+ is not set"):
            build(node, "data")
    elif group == "data":
        data = instantiate(node)
        assert len(data.owner) > 0 and len(data.attacker) > 0 and len(data.holdout) > 0
    else:
        obj = instantiate(node)
        assert obj is not None
        if group in ("method", "attack"):
            assert obj.name == option


def test_scale_resolver_picks_per_model_defaults():
    micro = compose_cfg(["model=micro"])
    sd = compose_cfg(["model=sd15"])
    assert micro.method.lr == 2e-3 and sd.method.lr == 1e-6
    assert compose_cfg(["method.lr=5e-4"]).method.lr == 5e-4


def test_help_lists_groups_and_options():
    out = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120).stdout
    for group in GROUPS + ["logger"]:
        assert f"{group}:" in out
    assert "watermarkdm" in out and "full_ft" in out


def test_invalid_hyperparameters_raise_config_errors():
    from bench.runner import build
    with pytest.raises(ConfigError, match="attack.lr must be positive"):
        build(compose_cfg(["attack.lr=-1"]).attack, "attack")
    with pytest.raises(ConfigError, match="method.steps must be at least 1"):
        build(compose_cfg(["method.steps=0"]).method, "method")
    with pytest.raises(ConfigError, match="conf/attack"):
        build(compose_cfg(["+attack.no_such_option=1"]).attack, "attack")
