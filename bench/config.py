"""Config helpers: the `${scale:micro,tiny,sd}` resolver that picks a default by model scale.

Method and attack YAMLs give one value per world scale, e.g. `steps: ${scale:200,500,1000}`
(micro world, tiny world, Stable Diffusion); the model config's `scale` picks one. An explicit
override (`method.steps=50`) replaces the whole expression.
"""
from __future__ import annotations

from omegaconf import OmegaConf

SCALES = ("micro", "tiny", "sd")


def _scale(micro, tiny, sd, *, _root_):
    scale = _root_.model.scale
    if scale not in SCALES:
        raise ValueError(f"model.scale must be one of {SCALES}, got {scale!r}")
    return {"micro": micro, "tiny": tiny, "sd": sd}[scale]


OmegaConf.register_new_resolver("scale", _scale, replace=True)
