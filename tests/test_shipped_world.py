"""The shipped tiny world: `model=tiny` loads the committed build, checked against its fingerprint, and builds
nothing; an altered, truncated, missing or extra file is refused with one paragraph; a config the shipped
build was not made with is refused; `model.source=build` has an address of its own. The export / materialize
round trip is checked on a real micro world (the same code that wrote bench/world/tiny_world/)."""
from __future__ import annotations

import json
import shutil
import time

import pytest
import torch
from omegaconf import OmegaConf
from transformers import CLIPModel

from bench.cache import Cache, address_of
from bench.errors import ConfigError
from bench.run.runner import build
from bench.run.stages import NOT_BUILT, world_stage
from bench.world import shipped
from bench.world.micro import MicroModel
from tests.helpers import compose_cfg, run_module


def tiny_parts(overrides=()):
    cfg = compose_cfg(["model=tiny", "data=tiny", *overrides])
    return build(cfg.model, "model"), OmegaConf.to_container(cfg.model, resolve=True)


def test_the_shipped_world_is_one_build_with_its_fingerprint():
    man = shipped.check_files()  # every file's size and sha256
    size = sum(f["size"] for f in man["files"].values())
    assert size < 30e6, f"the shipped world is {size / 1e6:.1f} MB"
    assert len(man["fingerprint"]) == 16 and man["built_with"]["threads"] == 1
    assert {"prompt_fidelity", "fid_generated_vs_holdout"} <= set(man["quality"])
    model, cfg = tiny_parts()
    assert model.source == "shipped"
    assert man["build_config"] == {k: v for k, v in cfg.items() if k not in NOT_BUILT}


def test_model_tiny_loads_the_shipped_world_and_builds_nothing(tmp_path):
    model, cfg = tiny_parts()
    start = time.perf_counter()
    world, built = world_stage(Cache(tmp_path), model, cfg, None, torch.device("cpu"))
    seconds = time.perf_counter() - start
    man = shipped.manifest()
    assert world.meta["fingerprint"] == man["fingerprint"]
    assert json.loads((tmp_path / "world" / world.meta["build_address"] / "build.json").read_text())["shipped"] is True
    assert seconds < 120, f"loading the shipped world took {seconds:.0f} s: was something built?"
    # the CLIP scorer was reassembled from its vision half and the pipeline's text encoder: the same tensors
    clip = CLIPModel.from_pretrained(world.clip_path)
    text = world.pipe.text_encoder.state_dict()
    assert all(torch.equal(clip.text_model.state_dict()[k], v) for k, v in text.items())
    again, built_again = world_stage(Cache(tmp_path), model, cfg, None, torch.device("cpu"))
    assert built and not built_again and again.address == world.address
    # a rebuild of the same config lives at its own address, never over the shipped one
    rebuild, rcfg = tiny_parts(["model.source=build"])
    rebuild_address = address_of("world", rebuild.version, {k: v for k, v in rcfg.items() if k not in NOT_BUILT})
    assert rebuild_address != world.meta["build_address"]
    # the cached copy edited afterwards is refused too
    unet = tmp_path / "world" / world.meta["build_address"] / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(unet.read_bytes())
    data[-1] ^= 1
    unet.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="weight files were changed after they were copied"):
        world_stage(Cache(tmp_path), model, cfg, None, torch.device("cpu"))


@pytest.mark.parametrize("damage", ["flip", "truncate", "missing", "extra", "manifest"])
def test_an_altered_shipped_world_is_refused_and_nothing_is_written(tmp_path, damage):
    copy = tmp_path / "shipped"
    shutil.copytree(shipped.SHIPPED, copy)
    unet = copy / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors"
    if damage == "flip":
        data = bytearray(unet.read_bytes())
        data[len(data) // 2] ^= 0x10
        unet.write_bytes(bytes(data))
    elif damage == "truncate":
        unet.write_bytes(unet.read_bytes()[:1000])
    elif damage == "missing":
        unet.unlink()
    elif damage == "extra":
        shutil.copy(unet, copy / "pipeline" / "unet" / "other.safetensors")
    else:
        (copy / shipped.MANIFEST).write_text("{not json")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ConfigError) as err:
        shipped.materialize(out, copy)
    text = str(err.value)
    assert "cannot be used" in text and "git checkout -- bench/world/tiny_world" in text and "\n" not in text
    if damage in ("flip", "truncate", "missing"):
        assert "pipeline/unet/diffusion_pytorch_model.safetensors" in text
    assert list(out.iterdir()) == []


def test_a_config_the_shipped_world_was_not_built_with_is_refused():
    model, cfg = tiny_parts(["model.unet.steps=1000"])
    with pytest.raises(ConfigError, match=r"model.unet=.*model.source=build"):
        world_stage(Cache("/nonexistent-cache"), model, cfg, None, torch.device("cpu"))
    with pytest.raises(ConfigError, match="model.source must be one of"):
        tiny_parts(["model.source=elsewhere"])
    with pytest.raises(ConfigError, match=r"model.source must be one of \['build'\] for model=micro"):
        build(compose_cfg(["model=micro", "+model.source=shipped"]).model, "model")


def test_the_cli_names_a_bad_source_in_one_paragraph(tmp_path):
    proc = run_module("bench", ["model.source=elsewhere", "method=none", "attack=none", f"paths.results_dir={tmp_path}"])
    assert proc.returncode != 0 and "model.source must be one of" in proc.stderr
    assert not (tmp_path / "records").exists()


def test_export_then_materialize_gives_back_the_built_world(tmp_path):
    """The shipping round trip on a real micro world: one copy of the text tower and of the tokenizer, the same
    fingerprint and the same CLIP tensors after materializing."""
    world = tmp_path / "world"
    world.mkdir()
    MicroModel().build(world)
    (world / "build.json").write_text(json.dumps({"seconds": 1.0}))
    man = shipped.export(world, tmp_path / "ship", {"name": "micro"})
    assert "clip/model.safetensors" not in man["files"] and "clip/tokenizer.json" not in man["files"]
    shipped_size = sum(f["size"] for f in man["files"].values())
    built_size = sum(p.stat().st_size for p in world.rglob("*") if p.is_file())
    assert shipped_size < 0.75 * built_size
    out = tmp_path / "out"
    out.mkdir()
    shipped.materialize(out, tmp_path / "ship")
    assert shipped.pipeline_fingerprint(out / "pipeline") == shipped.pipeline_fingerprint(world / "pipeline")
    a, b = CLIPModel.from_pretrained(str(world / "clip")), CLIPModel.from_pretrained(str(out / "clip"))
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert (out / "clip" / "tokenizer.json").read_bytes() == (world / "clip" / "tokenizer.json").read_bytes()
