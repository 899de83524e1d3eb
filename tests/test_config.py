"""Every option of every config group composes and instantiates; --help lists the groups."""
from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob
from hydra.utils import instantiate

from bench.errors import ConfigError
from bench.run.runner import build
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
        obj = build(node, group)  # drops the display-only `label` key
        assert obj is not None
        if group in ("method", "attack"):
            assert obj.name == option


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_experiment_preset_composes(preset):
    """Every preset composes with the real config, and the components it selects instantiate."""
    from hydra import compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={preset}"], return_hydra_config=True)
    assert cfg.hydra.runtime.choices.experiment == preset
    for group in ("method", "attack"):
        assert build(cfg[group], group) is not None
    sweep = cfg.hydra.sweeper.params or {}
    parser = OverridesParser.create()
    for group in ("method", "attack"):  # every option a preset sweeps over exists; a glob selects some
        if group not in sweep:
            continue
        (override,) = parser.parse_overrides([f"{group}={sweep[group]}"])
        value = override.value()
        chosen = (value.filter(options(group)) if isinstance(value, Glob) else
                  [str(v) for v in override.sweep_iterator()] if override.is_sweep_override() else [str(value)])
        assert chosen, (preset, group, sweep[group])
        for option in chosen:
            assert option in options(group), (preset, group, option)


def test_the_suite_sweeps_every_method_and_every_attack():
    """tiny_suite globs the groups, so a new YAML in conf/method/ or conf/attack/ joins it with no edit."""
    from hydra import compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        sweep = compose("config", overrides=["experiment=tiny_suite"], return_hydra_config=True).hydra.sweeper.params
    parser = OverridesParser.create()
    chosen = {g: parser.parse_overrides([f"{g}={sweep[g]}"])[0].value().filter(options(g)) for g in ("method", "attack")}
    assert chosen["method"] == options("method") and len(chosen["method"]) >= 6
    assert chosen["attack"] == [a for a in options("attack") if a != "none"] and len(chosen["attack"]) >= 13


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
    from bench.run.runner import build
    with pytest.raises(ConfigError, match="attack.lr must be positive"):
        build(compose_cfg(["attack.lr=-1"]).attack, "attack")
    with pytest.raises(ConfigError, match="method.steps must be at least 1"):
        build(compose_cfg(["method.steps=0"]).method, "method")
    with pytest.raises(ConfigError, match="conf/attack"):
        build(compose_cfg(["+attack.no_such_option=1"]).attack, "attack")


def test_slurm_launcher_writes_the_requested_resources(tmp_path, monkeypatch):
    """Without a cluster: the sbatch script hydra/launcher=slurm would submit asks for the GPUs, CPUs and memory
    given (the launcher is built from the real config; submitit's sbatch call is replaced by a capture)."""
    from hydra import compose, initialize_config_dir
    from submitit.slurm.slurm import SlurmExecutor

    class Captured(Exception):
        pass

    def capture(self, command):
        raise Captured(self._make_submission_file_text(command, "uid"))

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # "srun is on the PATH"
    monkeypatch.setattr(SlurmExecutor, "_submit_command", capture)
    overrides = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=1", "hydra.launcher.cpus_per_task=6",
                 "hydra.launcher.mem_gb=40", "hydra.launcher.partition=gpu", f"paths.results_dir={tmp_path}",
                 "hydra.job.name=bench"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    with pytest.raises(Captured) as sbatch:
        launcher.launch([["method=none"], ["method=watermarkdm"]], 0)
    script = sbatch.value.args[0]
    for flag in ("--gpus-per-node=1", "--cpus-per-task=6", "--mem=40GB", "--partition=gpu", "--requeue",
                 "--signal=USR2@120", "--array=0-1%2"):
        assert f"#SBATCH {flag}\n" in script, flag
