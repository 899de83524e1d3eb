"""Function-preserving permutation of hidden units: the same network, its units at other coordinates.

Threat model: the attacker knows the method, and white-box verifiers (AIAO, ActiveMark) read the
UNet's internal features at fixed coordinates (a unit's output channels, a transformer block's
feature dimensions). The attacker has no data, does no training and never sees the key: it
permutes hidden units consistently, so the network computes exactly the same function (up to
float rounding) and the attacker's utility is unchanged by construction, while the coordinates a
verifier reads now hold other units.

Kinds (one checkpoint each):
* `transformer`: each Transformer2DModel's inner width (proj_in .. blocks .. proj_out);
* `residual`: the residual stream's channels through the whole UNet (conv_in .. conv_out), within
  the constraints of every GroupNorm that reads them (see `grouped_permutation`);
* `resnet_inner`, `heads`, `ff_hidden`: units whose permutation leaves every unit's and block's
  output coordinates as they are (a resnet's inner channels, attention heads, GEGLU hidden units);
* `all`: all of the above.

Convention: a permutation `p` of n channels means new channel i holds old channel p[i]; a layer
writing those channels takes rows `W[p]`, a layer reading them takes columns `W[:, p]`.
"""
from __future__ import annotations

import re
from collections import defaultdict

import torch
from diffusers.models.downsampling import Downsample2D
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.upsampling import Upsample2D
from torch import nn

from attacks.base import WeightEdit
from bench.diffusion import generator
from bench.errors import require
from methods.features import transformer_blocks, unet_units

CHEAP = ("resnet_inner", "heads", "ff_hidden")
PARTS = {"transformer": ("transformer",), "residual": ("residual",), **{k: (k,) for k in CHEAP},
         "all": ("transformer", "residual", *CHEAP)}
BLOCKS = {"down_blocks": ("CrossAttnDownBlock2D", "DownBlock2D"), "mid_block": ("UNetMidBlock2DCrossAttn",),
          "up_blocks": ("CrossAttnUpBlock2D", "UpBlock2D")}
_TRANSFORMER_BLOCK = r"transformer_blocks\.\d+\.(norm[123]|attn[12]\.to_(q|k|v|out\.0)|ff\.net\.(0\.proj|2))"
UNIT_PARAMS = {  # the parameters each unit may have: anything else would need its own permutation rule
    ResnetBlock2D: r"(norm1|conv1|time_emb_proj|norm2|conv2|conv_shortcut)\.(weight|bias)",
    Transformer2DModel: rf"(norm|proj_in|proj_out|{_TRANSFORMER_BLOCK})\.(weight|bias)",
    Downsample2D: r"(conv|Conv2d_0)\.(weight|bias)",
    Upsample2D: r"conv\.(weight|bias)",
}


# ---- permutations -------------------------------------------------------------------------------

def cycle(n: int, gen: torch.Generator) -> torch.Tensor:
    """A random n-cycle (Sattolo): a permutation with no fixed point when n >= 2."""
    order = torch.randperm(n, generator=gen)
    perm = torch.empty(n, dtype=torch.long)
    perm[order] = order.roll(-1)
    return perm


def grouped_permutation(n: int, readings: list[tuple[int, int, int]], gen: torch.Generator) -> torch.Tensor:
    """A random permutation of n channels that maps every group of every reading GroupNorm onto a group.

    A reading (offset, total, groups) is a GroupNorm over `total` channels in `groups` equal groups,
    of which these n channels are [offset, offset + n). Atoms are the intervals between consecutive
    group boundaries of all readings; each group is a union of atoms. Channels are cycled within
    each atom (every channel moves), and whole atoms are shuffled among atoms of one class: same
    length and, for every reading, either both a whole group or both in the same group.
    """
    cuts = {0, n}
    for offset, total, groups in readings:
        size = total // groups
        cuts |= {b - offset for b in range(0, total + 1, size) if 0 < b - offset < n}
    cuts = sorted(cuts)
    classes = defaultdict(list)
    for start, end in zip(cuts[:-1], cuts[1:]):
        key = [end - start]
        for offset, total, groups in readings:
            size = total // groups
            g = (start + offset) // size
            key.append(-1 if (g * size - offset, (g + 1) * size - offset) == (start, end) else g)
        classes[tuple(key)].append((start, end))
    perm = torch.empty(n, dtype=torch.long)
    for atoms in classes.values():
        for (start, end), i in zip(atoms, torch.randperm(len(atoms), generator=gen).tolist()):
            perm[start:end] = atoms[i][0] + cycle(end - start, gen)
    return perm


def blockwise(perm: torch.Tensor, size: int) -> torch.Tensor:
    """The channel permutation that moves whole blocks of `size` channels as `perm` moves blocks."""
    return (perm[:, None] * size + torch.arange(size)).flatten()


def halves(perm: torch.Tensor, rows: int) -> torch.Tensor:
    """`perm` for a layer with len(perm) rows, or for both halves of one with twice as many (GEGLU, scale-shift)."""
    return perm if rows == len(perm) else torch.cat([perm, perm + len(perm)])


def permute_(module: nn.Module, out: torch.Tensor | None = None, inp: torch.Tensor | None = None) -> None:
    """Permute a Linear/Conv2d/norm in place: output rows (and bias) by `out`, input columns by `inp`."""
    weight, bias = module.weight, getattr(module, "bias", None)
    if out is not None:
        for p in (weight, bias):
            if p is not None:
                p.copy_(p.index_select(0, out.to(p.device)))
    if inp is not None:
        weight.copy_(weight.index_select(1, inp.to(weight.device)))


# ---- (a) transformer inner width, (c) heads and GEGLU hidden units ----------------------------

def permute_transformer(unit: Transformer2DModel, gen: torch.Generator) -> None:
    """One permutation of the inner width, shared by proj_in, every block's stream and proj_out."""
    p = torch.randperm(unit.proj_in.weight.shape[0], generator=gen)
    permute_(unit.proj_in, out=p)
    permute_(unit.proj_out, inp=p)
    for block in unit.transformer_blocks:
        for norm in (block.norm1, getattr(block, "norm2", None), block.norm3):
            if norm is not None:  # LayerNorm over the whole width: any permutation is valid
                permute_(norm, out=p)
        for attn in (block.attn1, getattr(block, "attn2", None)):
            if attn is None:
                continue
            readers = (attn.to_q,) if attn.is_cross_attention else (attn.to_q, attn.to_k, attn.to_v)
            for linear in readers:  # cross-attention's k/v read the text states: untouched
                permute_(linear, inp=p)
            permute_(attn.to_out[0], out=p)
        permute_(block.ff.net[0].proj, inp=p)
        permute_(block.ff.net[2], out=p)


def permute_heads(attn, gen: torch.Generator) -> None:
    """Whole heads: q/k/v output rows by head block (one permutation for all three), to_out's columns."""
    dim_head = attn.to_q.weight.shape[0] // attn.heads
    idx = blockwise(torch.randperm(attn.heads, generator=gen), dim_head)
    for linear in (attn.to_q, attn.to_k, attn.to_v):
        permute_(linear, out=idx)
    permute_(attn.to_out[0], inp=idx)


def permute_ff_hidden(ff, gen: torch.Generator) -> None:
    """GEGLU hidden units: both halves (value, gate) of the proj's rows alike, and ff.net.2's columns."""
    proj, down = ff.net[0].proj, ff.net[2]
    p = torch.randperm(down.weight.shape[1], generator=gen)
    permute_(proj, out=halves(p, proj.weight.shape[0]))
    permute_(down, inp=p)


# ---- (c) resnet inner channels ------------------------------------------------------------------

def permute_resnet_inner(resnet: ResnetBlock2D, gen: torch.Generator) -> None:
    """conv1's output channels with time_emb_proj's rows, norm2 (its groups kept) and conv2's columns."""
    n = resnet.conv1.weight.shape[0]
    p = grouped_permutation(n, [(0, n, resnet.norm2.num_groups)], gen)
    permute_(resnet.conv1, out=p)
    if resnet.time_emb_proj is not None:
        permute_(resnet.time_emb_proj, out=halves(p, resnet.time_emb_proj.weight.shape[0]))
    permute_(resnet.norm2, out=p)
    permute_(resnet.conv2, inp=p)


# ---- (b) the residual stream ------------------------------------------------------------------

class StreamPlan:
    """The residual stream's permutation variables ("streams"), the GroupNorms reading them and the
    layers writing or reading them. A layout is a tuple of streams: an activation, concatenated."""

    def __init__(self):
        self.sizes: list[int] = []
        self.reads: list[tuple[tuple[int, ...], int]] = []  # (layout, groups) per GroupNorm
        self.edits: list[tuple[nn.Module, tuple | None, tuple | None]] = []  # (module, out layout, in layout)

    def new(self, n: int) -> tuple[int]:
        self.sizes.append(n)
        return (len(self.sizes) - 1,)

    def norm(self, module: nn.GroupNorm, layout: tuple) -> None:
        self.reads.append((layout, module.num_groups))
        self.edits.append((module, layout, None))

    def layer(self, module: nn.Module, out: tuple | None = None, inp: tuple | None = None) -> None:
        self.edits.append((module, out, inp))

    def draw(self, gen: torch.Generator) -> list[torch.Tensor]:
        """One permutation per stream, respecting every GroupNorm at the offset where it reads the stream."""
        readings = defaultdict(list)
        for layout, groups in self.reads:
            total, offset = sum(self.sizes[s] for s in layout), 0
            for s in layout:
                readings[s].append((offset, total, groups))
                offset += self.sizes[s]
        return [grouped_permutation(n, readings[s], gen) for s, n in enumerate(self.sizes)]

    def apply(self, perms: list[torch.Tensor]) -> None:
        def index(layout):
            if layout is None:
                return None
            offsets = [sum(self.sizes[s] for s in layout[:i]) for i in range(len(layout))]
            return torch.cat([perms[s] + o for s, o in zip(layout, offsets)])
        for module, out, inp in self.edits:
            permute_(module, out=index(out), inp=index(inp))


def plan_resnet(plan: StreamPlan, resnet: ResnetBlock2D, x: tuple) -> tuple:
    """A resnet reads layout x; its output is a new stream, or x itself behind an identity shortcut."""
    plan.norm(resnet.norm1, x)
    plan.layer(resnet.conv1, inp=x)
    y = x
    if resnet.conv_shortcut is not None:
        y = plan.new(resnet.conv2.weight.shape[0])
        plan.layer(resnet.conv_shortcut, out=y, inp=x)
    plan.layer(resnet.conv2, out=y)
    return y


def plan_attention(plan: StreamPlan, unit: Transformer2DModel, x: tuple) -> None:
    """An attention unit adds its proj_out to its input: it reads and writes the same layout."""
    plan.norm(unit.norm, x)
    plan.layer(unit.proj_in, inp=x)
    plan.layer(unit.proj_out, out=x)


def plan_sampler(plan: StreamPlan, sampler: nn.Module, x: tuple) -> tuple:
    """A resampling conv starts a new stream; pooling or plain interpolation keeps x."""
    conv = getattr(sampler, "conv", None)
    if not isinstance(conv, nn.Conv2d):
        return x
    y = plan.new(conv.weight.shape[0])
    plan.layer(conv, out=y, inp=x)
    return y


def layers(block) -> list[tuple[ResnetBlock2D, Transformer2DModel | None]]:
    attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
    return list(zip(block.resnets, attentions))


def plan_residual(unet) -> StreamPlan:
    """Follow UNet2DConditionModel.forward: conv_in's output is the first skip, every down-block
    layer and downsampler adds one, and each up-block resnet reads cat([hidden, last skip])."""
    plan = StreamPlan()
    x = plan.new(unet.conv_in.weight.shape[0])
    plan.layer(unet.conv_in, out=x)
    skips = [x]
    for block in unet.down_blocks:
        for resnet, attn in layers(block):
            x = plan_resnet(plan, resnet, x)
            if attn is not None:
                plan_attention(plan, attn, x)
            skips.append(x)
        for sampler in block.downsamplers or []:
            x = plan_sampler(plan, sampler, x)
            skips.append(x)
    if (mid := unet.mid_block) is not None:
        x = plan_resnet(plan, mid.resnets[0], x)
        for attn, resnet in zip(mid.attentions, mid.resnets[1:]):
            plan_attention(plan, attn, x)
            x = plan_resnet(plan, resnet, x)
    for block in unet.up_blocks:
        for resnet, attn in layers(block):
            x = plan_resnet(plan, resnet, x + skips.pop())
            if attn is not None:
                plan_attention(plan, attn, x)
        for sampler in block.upsamplers or []:
            x = plan_sampler(plan, sampler, x)
    if unet.conv_norm_out is not None:
        plan.norm(unet.conv_norm_out, x)
    plan.layer(unet.conv_out, inp=x)  # its outputs, the latent channels, stay where they are
    return plan


def check_supported(unet) -> None:
    """Refuse (ConfigError) any block, unit or setting whose channels these rules do not cover."""
    mid = [] if unet.mid_block is None else [("mid_block", unet.mid_block)]
    blocks = [*((f"down_blocks.{i}", b) for i, b in enumerate(unet.down_blocks)), *mid,
              *((f"up_blocks.{i}", b) for i, b in enumerate(unet.up_blocks))]
    for name, block in blocks:
        kind = type(block).__name__
        require(kind in BLOCKS[name.split(".")[0]],
                f"attack=permute does not support {name} of type {kind}; it permutes UNets built from "
                f"{sorted(sum(BLOCKS.values(), ()))}.")
        require(not getattr(block, "s1", None), f"attack=permute: FreeU is enabled on {name}; it scales fixed "
                                                "channels, so disable it first (unet.disable_freeu()).")
    for name, unit in unet_units(unet):
        rule = UNIT_PARAMS.get(type(unit))
        extra = [n for n, _ in unit.named_parameters() if rule is None or not re.fullmatch(rule, n)]
        require(not extra, f"attack=permute does not support {name} ({type(unit).__name__}): no permutation "
                           f"rule for its parameters {extra[:4]}.")


# ---- the kinds, on a whole UNet -----------------------------------------------------------------

def transformers(unet) -> list[Transformer2DModel]:
    return [unit for _, unit in unet_units(unet) if isinstance(unit, Transformer2DModel)]


def resnets(unet) -> list[ResnetBlock2D]:
    return [unit for _, unit in unet_units(unet) if isinstance(unit, ResnetBlock2D)]


def attentions(unet) -> list[nn.Module]:
    return [a for _, block in transformer_blocks(unet) for a in (block.attn1, getattr(block, "attn2", None))
            if a is not None]


def feed_forwards(unet) -> list[nn.Module]:
    return [block.ff for _, block in transformer_blocks(unet)]


# kind -> (the modules it permutes, each on its own; how it permutes one); `residual` is one plan for all
EDITS = {"transformer": (transformers, permute_transformer), "resnet_inner": (resnets, permute_resnet_inner),
         "heads": (attentions, permute_heads), "ff_hidden": (feed_forwards, permute_ff_hidden)}


# ---- the attack -------------------------------------------------------------------------------

class Permute(WeightEdit):
    """One checkpoint per kind of permutation (`transformer`, `residual`, `all`, or a cheap kind alone)."""

    name = "permute"
    version = "1"
    budget_label = "permutation"
    unattacked = "none"

    def __init__(self, kinds=("transformer", "residual", "all"), seed: int = 0):
        kinds = list(kinds)
        bad = [k for k in kinds if not (isinstance(k, str) and k in PARTS)]
        require(not bad, f"attack.kinds has unknown kinds {bad}; choose from {list(PARTS)} (all = transformer + "
                         f"residual + {' + '.join(CHEAP)}).")
        super().__init__(kinds, "kinds")
        self.seed = seed

    @torch.no_grad()
    def edit(self, world, unet, value) -> None:
        check_supported(unet)
        gen = generator(self.seed, self.name, value)
        for part in PARTS[value]:
            if part == "residual":
                plan = plan_residual(unet)
                plan.apply(plan.draw(gen))
                continue
            modules, permute = EDITS[part]
            for module in modules(unet):
                permute(module, gen)
