"""The shipped tiny world: one build's weights in the package, checked against its fingerprint, never rebuilt.

`model=tiny` (`source: shipped`, the default) loads the world committed in `bench/world/tiny_world/`: every run
on every machine uses the same weights, so records from anywhere pool. The folder holds what cannot be
rebuilt bit for bit elsewhere, and nothing twice:

* `pipeline/`: the diffusers `StableDiffusionPipeline` (UNet, VAE, text encoder, scheduler, the small tokenizer
  configs);
* `clip/`: the CLIP scorer's config, processor config and `vision.safetensors`, its weights *without* the text
  tower, which is the pipeline's text encoder (the same tensors; the build copies them), and without its
  tokenizer file, which is the pipeline's;
* `manifest.json`: sha256 and size of every file, the build's fingerprint (`bench.run.stages.world_fingerprint`),
  its build config, losses, timings, thread count and quality figures.

`materialize` checks every shipped file, then writes the standard world folder (`pipeline/`, `clip/`) into the
cache, where the stages load it like any built world. A missing, altered or corrupt file is refused with one
paragraph; nothing is built in its place. `export` writes this folder from a built world (`python -m
bench.world ship`).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bench.cache import weights_digest, write_json_atomic
from bench.errors import ConfigError

SHIPPED = Path(__file__).resolve().parent / "tiny_world"
MANIFEST = "manifest.json"
FORMAT = 1
COPIES = {"clip/tokenizer.json": "pipeline/tokenizer/tokenizer.json"}  # shipped once, copied on materializing
TEXT_PREFIX = "text_model."  # CLIPModel's text tower keys: this prefix + CLIPTextModel's keys
NOT_WEIGHTS = ("data_root",)  # build settings that say where the data is, not what the weights are


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tensors_digest(state: dict) -> str:
    """sha256 over a state dict's names, dtypes, shapes and bytes, in name order (independent of file layout)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def pipeline_fingerprint(pipeline: Path) -> str:
    """The world fingerprint (first 16 hex of the sha256 over the pipeline's weight files, as the stages compute it)."""
    return weights_digest(pipeline)[:16]


def _refuse(problem: str, folder: Path) -> ConfigError:
    return ConfigError(
        f"The shipped tiny world in '{folder}' cannot be used: {problem}. Its files must be exactly those of the "
        f"committed build (their sha256 are in {MANIFEST}); an edited, truncated or missing file is refused rather "
        "than loaded, so that no run pools with another build. Fix: restore the folder from git (`git checkout -- "
        "bench/world/tiny_world`), or run on a world built on this machine with model.source=build (`python -m "
        "bench.world build` builds it, in about 15 minutes on 2 CPU cores, at its own cache address).")


def manifest(folder: Path = SHIPPED) -> dict:
    """The shipped world's manifest (ConfigError if it is missing or unreadable)."""
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise _refuse(f"{MANIFEST} is missing or not JSON ({type(err).__name__})", folder) from err
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("files"), dict):
        raise _refuse(f"{MANIFEST} is not a format-{FORMAT} manifest", folder)
    return data


def available(folder: Path = SHIPPED) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def check_files(folder: Path = SHIPPED) -> dict:
    """Check every shipped file's size and sha256 against the manifest (and that no weights file is extra);
    return the manifest."""
    folder = Path(folder)
    man = manifest(folder)
    for rel, entry in sorted(man["files"].items()):
        path = folder / rel
        if not path.is_file():
            raise _refuse(f"{rel} is missing", folder)
        if path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
            raise _refuse(f"{rel} differs from the committed build (size or sha256)", folder)
    extra = [str(p.relative_to(folder)) for p in folder.rglob("*.safetensors") if str(p.relative_to(folder))
             not in man["files"]]
    if extra:
        raise _refuse(f"it holds weights the manifest does not list ({', '.join(sorted(extra))})", folder)
    return man


def check_config(build_key: dict, folder: Path = SHIPPED) -> dict:
    """The manifest, after checking that `build_key` (the model config that decides how a world is built) is the
    shipped build's; a config the shipped world was not built with is refused, naming the settings."""
    man = manifest(folder)
    shipped = man["build_config"]
    diff = sorted(k for k in set(shipped) | set(build_key)
                  if k not in NOT_WEIGHTS and shipped.get(k) != build_key.get(k))
    if diff:
        shown = ", ".join(f"model.{k}={build_key.get(k)!r} (shipped: {shipped.get(k)!r})" for k in diff)
        raise ConfigError(
            f"The shipped tiny world was built with other settings than this config asks for: {shown}. The shipped "
            "world is one build of the default model=tiny. Fix: drop those overrides to use it, or add "
            "model.source=build to build a world with these settings on this machine (about 15 minutes on 2 CPU "
            "cores, cached; its fingerprint then differs from the shipped one, and the leaderboard keeps its "
            "records in rows of their own).")
    return man


def materialize(out: Path, folder: Path = SHIPPED) -> dict:
    """Check the shipped files and write the world folder (`pipeline/`, `clip/`, `build.json`) into `out` (an
    empty folder: the cache's temporary build folder). Returns the manifest."""
    folder, out = Path(folder), Path(out)
    man = check_files(folder)
    shutil.copytree(folder / "pipeline", out / "pipeline")
    shutil.copytree(folder / "clip", out / "clip")
    for copy, original in COPIES.items():
        shutil.copy(out / original, out / copy)
    vision = load_file(str(out / "clip" / "vision.safetensors"))
    text = load_file(str(out / "pipeline" / "text_encoder" / "model.safetensors"))
    clip = {**vision, **{TEXT_PREFIX + k: v for k, v in text.items()}}
    if tensors_digest(clip) != man["clip_tensors_sha256"]:
        raise _refuse("the CLIP scorer reassembled from vision.safetensors and the text encoder is not the shipped "
                      "one", folder)
    save_file(clip, str(out / "clip" / "model.safetensors"), metadata={"format": "pt"})
    (out / "clip" / "vision.safetensors").unlink()
    if pipeline_fingerprint(out / "pipeline") != man["fingerprint"]:
        raise _refuse("the pipeline's fingerprint is not the manifest's", folder)
    (out / "build.json").write_text(json.dumps({**man["build"], "shipped": True}, indent=1))
    return man


def export(world: Path, dest: Path, build_config: dict, extra: dict | None = None) -> dict:
    """Write the shipped folder `dest` from a built world folder `world` (`pipeline/`, `clip/`, `build.json`):
    the files without the rebuilt vocabulary and without CLIP's copy of the text tower, and the manifest."""
    world, dest = Path(world), Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copytree(world / "pipeline", dest / "pipeline")
    shutil.copytree(world / "clip", dest / "clip", ignore=shutil.ignore_patterns("*.safetensors"))
    for copy, original in COPIES.items():
        if sha256_file(world / copy) != sha256_file(world / original):
            raise ConfigError(f"{world}: {copy} is not {original}; this world cannot be shipped with one copy")
        (dest / copy).unlink()
    clip = load_file(str(world / "clip" / "model.safetensors"))
    text = load_file(str(world / "pipeline" / "text_encoder" / "model.safetensors"))
    tower = {k[len(TEXT_PREFIX):]: v for k, v in clip.items() if k.startswith(TEXT_PREFIX)}
    if tensors_digest(tower) != tensors_digest(text):
        raise ConfigError(f"{world}: CLIP's text tower is not the pipeline's text encoder; this world cannot be "
                          "shipped without both copies")
    save_file({k: v for k, v in clip.items() if not k.startswith(TEXT_PREFIX)}, str(dest / "clip" / "vision.safetensors"),
              metadata={"format": "pt"})
    files = {str(p.relative_to(dest)): {"size": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(dest.rglob("*")) if p.is_file()}
    man = {"format": FORMAT, "fingerprint": pipeline_fingerprint(world / "pipeline"),
           "clip_tensors_sha256": tensors_digest(clip),
           "build_config": build_config, "build": json.loads((world / "build.json").read_text()),
           "files": files, **(extra or {})}
    write_json_atomic(dest / MANIFEST, man)
    return man
