"""The denoiser's internal features, for white-box methods (AIAO, ActiveMark).

`unet_units` lists the UNet's computational units (resnets, attention blocks, down/upsamplers)
in the order the forward pass runs them; `transformer_blocks` lists its transformer blocks in
that order. `replace_output` / `capture_output` hook a unit's output for one forward pass, for
any diffusers UNet2DConditionModel (the micro and tiny worlds and Stable Diffusion alike).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch
from torch import nn


def unet_units(unet) -> list[tuple[str, nn.Module]]:
    """(name, module) for every resnet, attention block and resampler, in forward order."""
    units: list[tuple[str, nn.Module]] = []

    def block_units(prefix: str, block, resamplers: str) -> None:
        attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
        for i, (resnet, attn) in enumerate(zip(block.resnets, attentions)):
            units.append((f"{prefix}.resnets.{i}", resnet))
            if attn is not None:
                units.append((f"{prefix}.attentions.{i}", attn))
        for i, sampler in enumerate(getattr(block, resamplers, None) or []):
            units.append((f"{prefix}.{resamplers}.{i}", sampler))

    for i, block in enumerate(unet.down_blocks):
        block_units(f"down_blocks.{i}", block, "downsamplers")
    mid = unet.mid_block
    if mid is not None:  # mid: resnet 0, then (attention k, resnet k + 1) pairs
        units.append(("mid_block.resnets.0", mid.resnets[0]))
        for i, (attn, resnet) in enumerate(zip(getattr(mid, "attentions", []), mid.resnets[1:])):
            units.append((f"mid_block.attentions.{i}", attn))
            units.append((f"mid_block.resnets.{i + 1}", resnet))
    for i, block in enumerate(unet.up_blocks):
        block_units(f"up_blocks.{i}", block, "upsamplers")
    return units


def transformer_blocks(unet) -> list[tuple[str, nn.Module]]:
    """(name, BasicTransformerBlock) for every transformer block, in forward order."""
    out = []
    for name, unit in unet_units(unet):
        if name.split(".")[-2] == "attentions":
            out += [(f"{name}.transformer_blocks.{k}", b) for k, b in enumerate(unit.transformer_blocks)]
    return out


def _main(output):
    """The feature tensor in a module's output (a tensor, a tuple, or a diffusers output object)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple):
        return output[0]
    return output.sample


def _with_main(output, tensor):
    if isinstance(output, torch.Tensor):
        return tensor
    if isinstance(output, tuple):
        return (tensor, *output[1:])
    output.sample = tensor
    return output


@contextmanager
def replace_output(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]):
    """While active, `module`'s output feature f is replaced by fn(f)."""
    handle = module.register_forward_hook(lambda _m, _inp, out: _with_main(out, fn(_main(out))))
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def capture_output(module: nn.Module, store: dict, key: str = "out"):
    """While active, `store[key]` holds `module`'s latest output feature (gradients flow through)."""
    def hook(_m, _inp, out):
        store[key] = _main(out)
    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


@contextmanager
def capture_input(module: nn.Module, store: dict, key: str = "in"):
    """While active, `store[key]` holds `module`'s latest first positional input."""
    def hook(_m, args, kwargs):
        store[key] = args[0] if args else kwargs["hidden_states"]
    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield store
    finally:
        handle.remove()
