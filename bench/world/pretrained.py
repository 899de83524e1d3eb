"""Real models (Stable Diffusion 1.5, 2.1, ...) loaded with `from_pretrained` from a hub id or folder."""
from __future__ import annotations

from pathlib import Path

from bench.errors import ConfigError
from bench.world.spec import ModelSpec

LOCAL_PREFIXES = ("/", "./", "../", "~")


def check_local(path: str, what: str, key: str) -> str:
    """Resolve `path` if it names a local folder; raise if it looks local but does not exist."""
    expanded = Path(path).expanduser()
    if expanded.exists():
        return str(expanded.resolve())
    if path.startswith(LOCAL_PREFIXES):
        raise ConfigError(f"{what} folder '{path}' does not exist. Set {key}=<folder> to a local copy in the "
                          "diffusers layout, or to a hub id (for example runwayml/stable-diffusion-v1-5) on a "
                          "machine that can reach the hub.")
    return path  # a hub id


class PretrainedModel(ModelSpec):
    """A StableDiffusionPipeline folder or hub id, and a CLIP model (folder or hub id) for CLIP score."""

    built = False

    def __init__(self, path: str, clip_path: str | None = None, name: str = "sd15", scale: str = "sd",
                 resolution: int = 512, precision: str = "fp16", sampling: dict | None = None,
                 eval: dict | None = None, unet_weights: str | None = None, **training):
        super().__init__(name, scale, resolution, precision, sampling, eval, unet_weights, **training)
        self.path = check_local(str(path), "model.path", "model.path")
        self.clip_path = check_local(str(clip_path), "CLIP model", "model.clip_path") if clip_path else None
