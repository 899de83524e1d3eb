"""The permutable groups of a diffusers UNet's hidden units: drawn at random by the attack
(`attacks.permute`), recovered by the owner's aligned verification (`align`).

A network keeps its function when its hidden units are permuted consistently: the layer writing
them takes the permutation on its output rows, every layer reading them on its input columns. The
groups, each permuted on its own:
* `transformer`: each Transformer2DModel's inner width (proj_in .. blocks .. proj_out);
* `residual`: the residual stream's channels through the whole UNet (conv_in .. conv_out), within
  the constraints of every GroupNorm that reads them (`atom_classes`);
* `resnet_inner`, `heads`, `ff_hidden`: units whose permutation leaves every unit's and block's
  output coordinates as they are (a resnet's inner channels, attention heads, GEGLU hidden units).

Convention: a permutation `p` of n channels means new channel i holds old channel p[i]; a layer
writing those channels takes rows `W[p]`, a layer reading them takes columns `W[:, p]`.

`align` is the owner's counter-move (the answer to structural obfuscation in the white-box
watermark literature, and the activation matching of Git Re-Basin, Ainsworth et al., ICLR 2023):
match the suspect's units to the owner's model by the correlation of their activations on the
owner's probe inputs, one assignment problem per group, and undo the permutation.
"""
from __future__ import annotations

import copy
import re
import time
from collections import defaultdict
from contextlib import ExitStack

import numpy as np
import torch
from diffusers.models.downsampling import Downsample2D
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.upsampling import Upsample2D
from scipy.optimize import linear_sum_assignment
from torch import nn

from bench.errors import ConfigError, require
from bench.features import capture_output, transformer_blocks, unet_units

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


def atom_classes(n: int, readings: list[tuple[int, int, int]]) -> list[list[tuple[int, int]]]:
    """The freedom a permutation of n channels has under the GroupNorms that read them.

    A reading (offset, total, groups) is a GroupNorm over `total` channels in `groups` equal groups,
    of which these n channels are [offset, offset + n). Atoms are the intervals between consecutive
    group boundaries of all readings; each group is a union of atoms. A permutation keeps every group a
    group when it moves channels within atoms and whole atoms among atoms of one class: same length and,
    for every reading, either both a whole group or both in the same group. Returns the classes, each a
    list of (start, end) atoms.
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
    return list(classes.values())


def grouped_permutation(n: int, readings: list[tuple[int, int, int]], gen: torch.Generator) -> torch.Tensor:
    """A random permutation of n channels that maps every group of every reading GroupNorm onto a group
    (`atom_classes`): channels are cycled within each atom (every channel moves), and whole atoms are
    shuffled within their class."""
    perm = torch.empty(n, dtype=torch.long)
    for atoms in atom_classes(n, readings):
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

def draw_transformer(unit: Transformer2DModel, gen: torch.Generator) -> torch.Tensor:
    return torch.randperm(unit.proj_in.weight.shape[0], generator=gen)


def permute_transformer(unit: Transformer2DModel, p: torch.Tensor) -> None:
    """One permutation of the inner width, shared by proj_in, every block's stream and proj_out."""
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


def draw_heads(attn, gen: torch.Generator) -> torch.Tensor:
    return torch.randperm(attn.heads, generator=gen)


def permute_heads(attn, p: torch.Tensor) -> None:
    """Whole heads (p permutes heads): q/k/v output rows by head block (one permutation for all three), to_out's
    columns."""
    dim_head = attn.to_q.weight.shape[0] // attn.heads
    idx = blockwise(p, dim_head)
    for linear in (attn.to_q, attn.to_k, attn.to_v):
        permute_(linear, out=idx)
    permute_(attn.to_out[0], inp=idx)


def draw_ff_hidden(ff, gen: torch.Generator) -> torch.Tensor:
    return torch.randperm(ff.net[2].weight.shape[1], generator=gen)


def permute_ff_hidden(ff, p: torch.Tensor) -> None:
    """GEGLU hidden units: both halves (value, gate) of the proj's rows alike, and ff.net.2's columns."""
    proj, down = ff.net[0].proj, ff.net[2]
    permute_(proj, out=halves(p, proj.weight.shape[0]))
    permute_(down, inp=p)


# ---- (c) resnet inner channels ------------------------------------------------------------------

def resnet_readings(resnet: ResnetBlock2D) -> list[tuple[int, int, int]]:
    n = resnet.conv1.weight.shape[0]
    return [(0, n, resnet.norm2.num_groups)]


def draw_resnet_inner(resnet: ResnetBlock2D, gen: torch.Generator) -> torch.Tensor:
    return grouped_permutation(resnet.conv1.weight.shape[0], resnet_readings(resnet), gen)


def permute_resnet_inner(resnet: ResnetBlock2D, p: torch.Tensor) -> None:
    """conv1's output channels with time_emb_proj's rows, norm2 (its groups kept) and conv2's columns."""
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
        self.sources: list[nn.Module] = []  # per stream, the module whose output is that stream's activation
        self.reads: list[tuple[tuple[int, ...], int]] = []  # (layout, groups) per GroupNorm
        self.edits: list[tuple[nn.Module, tuple | None, tuple | None]] = []  # (module, out layout, in layout)

    def new(self, n: int, source: nn.Module) -> tuple[int]:
        self.sizes.append(n)
        self.sources.append(source)
        return (len(self.sizes) - 1,)

    def norm(self, module: nn.GroupNorm, layout: tuple) -> None:
        self.reads.append((layout, module.num_groups))
        self.edits.append((module, layout, None))

    def layer(self, module: nn.Module, out: tuple | None = None, inp: tuple | None = None) -> None:
        self.edits.append((module, out, inp))

    def readings(self) -> list[list[tuple[int, int, int]]]:
        """Per stream, every GroupNorm reading it, at the offset where it reads the stream (`atom_classes`)."""
        readings = defaultdict(list)
        for layout, groups in self.reads:
            total, offset = sum(self.sizes[s] for s in layout), 0
            for s in layout:
                readings[s].append((offset, total, groups))
                offset += self.sizes[s]
        return [readings[s] for s in range(len(self.sizes))]

    def draw(self, gen: torch.Generator) -> list[torch.Tensor]:
        """One permutation per stream, respecting every GroupNorm at the offset where it reads the stream."""
        return [grouped_permutation(n, r, gen) for n, r in zip(self.sizes, self.readings())]

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
        y = plan.new(resnet.conv2.weight.shape[0], resnet)
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
    y = plan.new(conv.weight.shape[0], sampler)
    plan.layer(conv, out=y, inp=x)
    return y


def layers(block) -> list[tuple[ResnetBlock2D, Transformer2DModel | None]]:
    attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
    return list(zip(block.resnets, attentions))


def plan_residual(unet) -> StreamPlan:
    """Follow UNet2DConditionModel.forward: conv_in's output is the first skip, every down-block
    layer and downsampler adds one, and each up-block resnet reads cat([hidden, last skip])."""
    plan = StreamPlan()
    x = plan.new(unet.conv_in.weight.shape[0], unet.conv_in)
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


# kind -> (the modules it permutes, each on its own; a random permutation of one; how to apply one);
# `residual` is one plan for the whole UNet
EDITS = {"transformer": (transformers, draw_transformer, permute_transformer),
         "resnet_inner": (resnets, draw_resnet_inner, permute_resnet_inner),
         "heads": (attentions, draw_heads, permute_heads),
         "ff_hidden": (feed_forwards, draw_ff_hidden, permute_ff_hidden)}


@torch.no_grad()
def permute_randomly(unet, kind: str, gen: torch.Generator) -> None:
    """Permute `unet` in place by random permutations of every group `kind` names (`PARTS`), drawn from `gen`."""
    check_supported(unet)
    for part in PARTS[kind]:
        if part == "residual":
            plan = plan_residual(unet)
            plan.apply(plan.draw(gen))
            continue
        modules, draw, apply = EDITS[part]
        for module in modules(unet):
            apply(module, draw(module, gen))


# ---- alignment: the owner's counter-move ---------------------------------------------------------

ALIGN_ROWS = 2048  # activation rows (samples x positions) kept per unit group for the correlations


def _rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """(samples, n) activations of n units from a feature map (B, n, H, W) or a token sequence (B, L, n)."""
    t = t.detach().float()
    if t.dim() == 4 and t.shape[1] == n:
        t = t.permute(0, 2, 3, 1)
    t = t.reshape(-1, n)
    return t[:: max(1, len(t) // ALIGN_ROWS)][:ALIGN_ROWS].cpu()


def _similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Correlations (n, m) between the columns of a (N, n) and b (N, m); a constant column correlates 0."""
    a = (a - a.mean(0)) / (a.std(0) + 1e-6)
    b = (b - b.mean(0)) / (b.std(0) + 1e-6)
    return a.T @ b / len(a)


def match(sim: torch.Tensor, classes: list[list[tuple[int, int]]] | None = None) -> torch.Tensor:
    """The permutation p (new unit i holds suspect unit p[i]) maximising the summed similarity sim[i, p[i]] of
    reference unit i to suspect unit p[i], one assignment problem (`linear_sum_assignment`) per atom pair and
    one over atoms per class (`atom_classes`), so a GroupNorm's groups stay groups. No classes: one problem."""
    n = sim.shape[0]
    classes = classes or [[(0, n)]]
    s = sim.numpy()
    perm = torch.empty(n, dtype=torch.long)
    for atoms in classes:
        k = len(atoms)
        score, inner = np.zeros((k, k)), {}
        for a, (s0, e0) in enumerate(atoms):
            for b, (s1, e1) in enumerate(atoms):
                rows, cols = linear_sum_assignment(s[s0:e0, s1:e1], maximize=True)
                score[a, b], inner[a, b] = s[s0:e0, s1:e1][rows, cols].sum(), cols + s1
        for a, b in zip(*linear_sum_assignment(score, maximize=True)):
            perm[atoms[a][0]:atoms[a][1]] = torch.as_tensor(inner[a, b])
    return perm


def _groups(unet) -> list[tuple[str, object, int, object, list]]:
    """(kind, thing to permute, units, modules whose outputs hold the units, GroupNorm classes or None) for every
    permutable group, in a fixed order; `thing` is a module, or (plan, stream index) for the residual stream."""
    out = []
    for unit in transformers(unet):
        out.append(("transformer", unit, unit.proj_in.weight.shape[0], [unit.proj_in], None))
    for attn in attentions(unet):
        out.append(("heads", attn, attn.heads, [attn.to_q, attn.to_k, attn.to_v], None))
    for ff in feed_forwards(unet):
        out.append(("ff_hidden", ff, ff.net[2].weight.shape[1], [ff.net[0]], None))
    for resnet in resnets(unet):
        n = resnet.conv1.weight.shape[0]
        out.append(("resnet_inner", resnet, n, [resnet.conv1], atom_classes(n, resnet_readings(resnet))))
    plan = plan_residual(unet)
    for s, (n, readings) in enumerate(zip(plan.sizes, plan.readings())):
        out.append(("residual", (plan, s), n, [plan.sources[s]], atom_classes(n, readings)))
    return out


def _activations(unet, groups, probe: dict) -> list[torch.Tensor]:
    """Per group, the (samples, units) activations of `unet` on the probe inputs; for heads, a list of q, k and v
    as (samples, heads, dim_head)."""
    store: dict = {}
    modules = list(dict.fromkeys(m for g in groups for m in g[3]))
    with ExitStack() as stack:
        for i, module in enumerate(modules):
            stack.enter_context(capture_output(module, store, i))
        p = next(unet.parameters())
        unet(probe["x"].to(p.device, p.dtype), probe["t"].to(p.device),
             encoder_hidden_states=probe["emb"].to(p.device, p.dtype))
    index = {m: i for i, m in enumerate(modules)}
    out = []
    for kind, _thing, n, mods, _classes in groups:
        if kind == "heads":  # q, k and v apart: cross-attention's k and v have the text's length
            out.append([_rows(store[index[m]], store[index[m]].shape[-1]).reshape(-1, n, store[index[m]].shape[-1] // n)
                        for m in mods])
        else:  # GEGLU's output for ff_hidden: the gated hidden units
            out.append(_rows(store[index[mods[0]]], n))
    return out


def _head_similarity(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """(heads, heads): the mean correlation of head i's q, k and v dimensions with head j's, dimension by dimension
    (a permutation of heads moves whole heads, so dimension d of a head stays dimension d)."""
    out = []
    for x, y in zip(a, b):
        h, d = x.shape[1], x.shape[2]
        sims = _similarity(x.reshape(len(x), h * d), y.reshape(len(y), h * d)).reshape(h, d, h, d)
        out.append(torch.diagonal(sims, dim1=1, dim2=3).mean(-1))
    return torch.stack(out).mean(0)


@torch.no_grad()
def align(reference, suspect, probe: dict) -> tuple[object, dict]:
    """A copy of `suspect` whose hidden units are permuted to line up with `reference`'s, and what it found.

    Each permutable group (every transformer's inner width, attention heads, GEGLU hidden units, resnet inner
    channels, residual streams within their GroupNorm groups) is matched on its own by the correlation of its
    units' activations on `probe` (dict x, t, emb: the owner's probe inputs) through each model: a permutation
    of the other groups leaves a group's activations as they are, so the groups are independent. Only
    function-preserving permutations are applied, so the aligned copy computes what `suspect` computes.
    Returns (aligned copy, {"seconds", "units", "moved", "similarity"}): the fraction of units the alignment
    moved and the mean similarity of the matched pairs, overall and per kind.
    """
    start = time.perf_counter()
    check_supported(suspect)
    aligned = copy.deepcopy(suspect)
    ref_groups, sus_groups = _groups(reference), _groups(aligned)
    if [(g[0], g[2]) for g in ref_groups] != [(g[0], g[2]) for g in sus_groups]:
        raise ConfigError("Alignment needs the suspect UNet to have the owner's architecture: their permutable unit "
                          "groups differ.")
    ref_acts, sus_acts = _activations(reference, ref_groups, probe), _activations(aligned, sus_groups, probe)
    stats: dict = defaultdict(lambda: [0, 0, 0.0])  # kind -> units, moved, summed similarity
    streams = []
    for (kind, thing, n, _m, classes), ra, sa in zip(sus_groups, ref_acts, sus_acts):
        sim = _head_similarity(ra, sa) if kind == "heads" else _similarity(ra, sa)
        p = match(sim + 1e-6 * torch.eye(n), classes)  # ties (dead units) stay where they are
        st = stats[kind]
        st[0] += n
        st[1] += int((p != torch.arange(n)).sum())
        st[2] += float(sim[torch.arange(n), p].sum())
        if kind == "residual":
            streams.append(p)
        else:
            EDITS[kind][2](thing, p)
    if streams:
        plan = sus_groups[-1][1][0]
        plan.apply(streams)
    units = sum(s[0] for s in stats.values())
    report = {"seconds": round(time.perf_counter() - start, 3), "units": units,
              "moved": sum(s[1] for s in stats.values()) / units,
              "similarity": sum(s[2] for s in stats.values()) / units,
              "by_kind": {k: {"units": s[0], "moved": s[1] / s[0], "similarity": s[2] / s[0]}
                          for k, s in sorted(stats.items())}}
    return aligned, report
