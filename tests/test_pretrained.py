"""model=sd15 loads any saved StableDiffusionPipeline folder exactly as it would load Stable Diffusion."""
from __future__ import annotations

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bench.cache import Cache
from bench.diffusion import generate
from bench.run.stages import world_stage
from tests.helpers import compose_cfg


def test_saved_pipeline_loads_through_the_sd15_config(micro_world, tmp_path):
    folder = tmp_path / "my-sd"
    micro_world.pipe.save_pretrained(folder, safe_serialization=True)
    cfg = compose_cfg(["model=sd15", f"model.path={folder}", "model.clip_path=null", "model.precision=fp32",
                       "model.resolution=32", "model.sampling.steps=4"])
    model = instantiate(cfg.model)
    assert model.path == str(folder.resolve()) and model.scale == "sd"
    world, built = world_stage(Cache(tmp_path / "cache"), model, OmegaConf.to_container(cfg.model, resolve=True),
                               None, torch.device("cpu"))
    assert not built and not list((tmp_path / "cache").glob("world/*"))  # a folder is loaded, never copied
    for part in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(world.pipe, part).state_dict(), getattr(micro_world.pipe, part).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert world.pipe.tokenizer("a photo of a cat").input_ids == micro_world.pipe.tokenizer("a photo of a cat").input_ids
    # and it generates the same images as the world it was saved from
    a = generate(world.pipe, ["a photo"], 0, 4, 3.0, 32)
    b = generate(micro_world.pipeline_with(), ["a photo"], 0, 4, 3.0, 32)
    assert torch.allclose(a, b, atol=1e-5)
