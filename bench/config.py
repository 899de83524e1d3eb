"""Config helpers: `compose` (the harness's config with overrides) and the `${scale:micro,tiny,sd}` resolver that picks a default by model scale.

Method and attack YAMLs give one value per world scale, e.g. `steps: ${scale:200,500,1000}`
(micro world, tiny world, Stable Diffusion); the model config's `scale` picks one. An explicit
override (`method.steps=50`) replaces the whole expression.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

SCALES = ("micro", "tiny", "sd")


def _scale(micro, tiny, sd, *, _root_):
    scale = _root_.model.scale
    if scale not in SCALES:
        raise ValueError(f"model.scale must be one of {SCALES}, got {scale!r}")
    return {"micro": micro, "tiny": tiny, "sd": sd}[scale]


OmegaConf.register_new_resolver("scale", _scale, replace=True)

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose(overrides: list[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """The harness's config (`conf/config.yaml`) with `overrides`, composed without running the app; inside an
    initialised Hydra (a run, a test's own `initialize`) it composes there. `return_hydra_config`: with the `hydra`
    node (its `runtime.choices` name the YAML picked in each group)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)
