"""The World every stage works in, and how it is loaded from a pipeline folder.

A world folder holds `pipeline/` (a diffusers `StableDiffusionPipeline` saved with
`save_pretrained`) and optionally `clip/` (a transformers `CLIPModel` + `CLIPProcessor`).
The micro and tiny worlds are built into such folders; Stable Diffusion is loaded from a hub
id or local folder. After loading, every world goes through the same code.
"""
from __future__ import annotations

import copy
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import diffusers
import torch
import transformers
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file, save_file

from bench.diffusion import GEN_BATCH, EncodedDataset
from bench.errors import CheckpointError, ConfigError
from bench.training import TrainSettings

log = logging.getLogger(__name__)
diffusers.utils.logging.disable_progress_bar()   # per-component loading bars drown the stage logs
transformers.utils.logging.disable_progress_bar()


class _FirstTruncationOnly(logging.Filter):
    """Lets diffusers' "part of your input was truncated" warning through once per process. On the tiny world
    (`model_max_length` 16) SleeperMark's trigger prefix on the longest captions passes it on every sampling
    batch, and hundreds of copies drowned the stage logs; the cut is the same at embedding and at verification."""
    PREFIX = "The following part of your input was truncated"

    def __init__(self):
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.PREFIX):
            return True
        if self.seen:
            return False
        self.seen = True
        record.msg = f"{record.msg} (prompts are cut at the tokenizer's model_max_length, the same way wherever they " \
                     f"are encoded; shown once per process)"
        return True


logging.getLogger("diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion").addFilter(_FirstTruncationOnly())

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TEXT_ENCODER = "text_encoder."  # key prefix of a fine-tuned text encoder's tensors in a model's weights file


def model_state(unet, text_encoder=None) -> dict[str, torch.Tensor]:
    """What a model's weights file holds: the UNet's state dict, plus the text encoder's under
    `text_encoder.` when an attack fine-tuned it (models without one use the world's)."""
    state = dict(unet.state_dict())
    if text_encoder is not None:
        state.update({TEXT_ENCODER + k: v for k, v in text_encoder.state_dict().items()})
    return state


def split_weights(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """(UNet state, text-encoder state or None) of a model's weights (see `model_state`)."""
    text = {k[len(TEXT_ENCODER):]: v for k, v in state.items() if k.startswith(TEXT_ENCODER)}
    return {k: v for k, v in state.items() if not k.startswith(TEXT_ENCODER)}, text or None


@dataclass
class Sampling:
    """How images are generated for evaluation: sampler steps, guidance, resolution."""

    steps: int = 20
    guidance_scale: float = 7.5
    resolution: int = 512


@dataclass
class World:
    """The base pipeline, the CLIP scorer and generation settings, on one device."""

    pipe: StableDiffusionPipeline
    clip_path: str | None
    sampling: Sampling
    address: str
    device: torch.device
    meta: dict = field(default_factory=dict)
    data: object = None  # bench.data.world_data.WorldData
    _encoded: dict = field(default_factory=dict)
    training: TrainSettings = field(default_factory=TrainSettings)  # precision etc. of every training loop
    gen_batch: int = GEN_BATCH  # images per pipeline call (verification queries, FID / CLIP images)

    def encoded(self, split: str) -> EncodedDataset:
        """The world's `owner`, `attacker` or `holdout` data, encoded once per process."""
        if split not in self._encoded:
            self._encoded[split] = EncodedDataset(self.pipe, getattr(self.data, split))
        return self._encoded[split]

    @property
    def unet(self):
        return self.pipe.unet

    def pipeline_with(self, unet=None, text_encoder=None) -> StableDiffusionPipeline:
        """A pipeline sharing this world's parts, with the UNet / text encoder replaced."""
        parts = dict(self.pipe.components)
        if unet is not None:
            parts["unet"] = unet
        if text_encoder is not None:
            parts["text_encoder"] = text_encoder
        pipe = StableDiffusionPipeline(**parts, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def fresh_unet(self, state: dict[str, torch.Tensor] | None = None):
        """A trainable copy of the base UNet (fp32: the master weights of mixed-precision training), optionally
        with `state` loaded into it; with gradient checkpointing when the world's training settings ask for it."""
        unet = copy.deepcopy(self.pipe.unet).float()
        if state is not None:
            unet.load_state_dict(state)
        unet.requires_grad_(True)
        if self.training.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        return unet

    def fresh_text_encoder(self, state: dict[str, torch.Tensor] | None = None):
        """A trainable copy of the base text encoder (fp32), optionally with `state` loaded into it."""
        text_encoder = copy.deepcopy(self.pipe.text_encoder).float()
        if state is not None:
            text_encoder.load_state_dict(state)
        return text_encoder.requires_grad_(True)

    def load_model(self, weights: Path):
        """(UNet, text-encoder state or None) of a model's weights file: a frozen copy of the base UNet
        carrying its UNet weights, and the fine-tuned text encoder's tensors if it has them."""
        unet_state, text_state = split_weights(read_weights(weights))
        unet = self.fresh_unet(unet_state)
        unet.requires_grad_(False).eval()
        dtype = self.pipe.unet.dtype
        return (unet if dtype == torch.float32 else unet.to(dtype)), text_state  # fresh_unet is fp32

    @contextmanager
    def text_encoder_as(self, state: dict[str, torch.Tensor] | None):
        """Within the block the world's text encoder carries `state` (a fine-tuned one; None: no change),
        so everything that encodes text (pipelines, `encoded`, the methods' verifiers) uses it."""
        if state is None:
            yield
            return
        encoder = self.pipe.text_encoder
        original = {k: v.clone() for k, v in encoder.state_dict().items()}
        encoder.load_state_dict(state)  # load_state_dict copies into the existing (device, dtype) tensors
        self._encoded.clear()
        try:
            yield
        finally:
            encoder.load_state_dict(original)
            self._encoded.clear()


def resolve_device(name: str) -> torch.device:
    """`auto` means CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} was requested but no CUDA device is visible. Use device=cpu or "
                          "device=auto, or run on a GPU node (hydra/launcher=slurm).")
    return torch.device(name)


SDPA_PROCESSORS = ("AttnProcessor2_0", "FusedAttnProcessor2_0", "AttnAddedKVProcessor2_0")  # F.scaled_dot_product_attention


def attention_report(pipe) -> dict:
    """Which attention kernels the pipeline uses: the UNet's processor classes (diffusers picks AttnProcessor2_0,
    i.e. torch's scaled_dot_product_attention, on torch 2) and the text encoder's attention implementation."""
    names = sorted({type(p).__name__ for p in pipe.unet.attn_processors.values()})
    text = getattr(pipe.text_encoder.config, "_attn_implementation", None)
    return {"unet": names, "unet_sdpa": bool(names) and all(n in SDPA_PROCESSORS for n in names), "text_encoder": text}


def check_sdpa(pipe) -> dict:
    """Log the attention kernels (see `attention_report`); warn when the UNet does not use SDPA."""
    report = attention_report(pipe)
    if report["unet_sdpa"]:
        log.info("attention: UNet %s (torch scaled_dot_product_attention) in %d layers; text encoder: %s",
                 "/".join(report["unet"]), len(pipe.unet.attn_processors), report["text_encoder"])
    else:
        log.warning("attention: the UNet uses %s, not torch's SDPA (AttnProcessor2_0): training and sampling will be "
                    "slower and take more memory", report["unet"])
    return report


def load_world(folder: Path | str, sampling: Sampling, address: str, device: torch.device,
               precision: str = "fp32", clip_path: str | None = None, meta: dict | None = None) -> World:
    """Load a StableDiffusionPipeline folder (or hub id) into a frozen World on `device`."""
    try:
        pipe = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None, feature_extractor=None,
                                                       requires_safety_checker=False, dtype=DTYPES[precision],
                                                       use_safetensors=True)
    except (OSError, ValueError, EnvironmentError) as err:
        raise ConfigError(
            f"Could not load a Stable Diffusion pipeline from '{folder}': {err}. Point model.path at a local "
            "folder in the diffusers layout (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/, "
            "weights as .safetensors), or at a hub id on a machine that can reach the hub.") from err
    pipe.to(device)
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        part.requires_grad_(False).eval()
    pipe.set_progress_bar_config(disable=True)
    check_sdpa(pipe)
    return World(pipe=pipe, clip_path=clip_path, sampling=sampling, address=address, device=device, meta=meta or {})


def read_weights(path: Path | str) -> dict[str, torch.Tensor]:
    """Read a weights file safely: safetensors, or a torch file loaded with weights_only=True.

    Pickle-based files that need arbitrary code to load are refused with an explanation.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Weights file '{path}' does not exist. Check the path (relative paths are resolved "
                              "from the directory you launched from).")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises several types for corrupt headers
            raise CheckpointError(f"'{path}' is not a readable safetensors file ({err}). The file is corrupt or "
                                  "truncated; re-export it with safetensors.torch.save_file.") from err
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"Refusing to load '{path}': it is not a safetensors file and it cannot be read with torch.load("
            f"weights_only=True) ({type(err).__name__}). Files that need full pickle loading can run arbitrary code. "
            "Convert it on a trusted machine with safetensors.torch.save_file(state_dict, 'weights.safetensors') "
            "and pass the .safetensors file instead.") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"'{path}' does not hold a flat state dict of tensors; save the UNet's state_dict() "
                              "with safetensors.torch.save_file.")
    return state


def write_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """Save a state dict as safetensors (contiguous CPU copies)."""
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path))
