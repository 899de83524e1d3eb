"""attack=permute: the permuted UNet computes the same function, its weights and feature coordinates moved."""
from __future__ import annotations

import copy
import json
from contextlib import ExitStack

import pytest
import torch
from diffusers import UNet2DConditionModel
from omegaconf import OmegaConf

from attacks.permute import Permute
from bench.permutation import grouped_permutation, plan_residual
from bench.cache import Cache
from bench.errors import ConfigError
from bench.metrics.base import ModelRef
from bench.run.runner import build
from bench.run.stages import attack_stage
from bench.features import capture_output, transformer_blocks, unet_units
from tests.helpers import SHRINK, compose_cfg

ATOL = 1e-5
CHEAP = ["resnet_inner", "heads", "ff_hidden"]


@pytest.fixture(scope="module")
def world(micro_world):
    return micro_world


def varied(unet: UNet2DConditionModel, seed: int = 0) -> UNet2DConditionModel:
    """`unet` with every norm's weight and bias moved off their (1, 0) init, so that a norm permuted
    wrongly (or not at all) changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in unet.modules():
            if isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                for p in (module.weight, module.bias):
                    p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return unet.eval()


def sd_layout_unet(linear_projection: bool = False) -> UNet2DConditionModel:
    """Stable Diffusion 1.5's block layout at small widths: 64 + 32 channels meet in an up block under
    8 groups of 12, so GroupNorm groups straddle the concatenation."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64, 64, 64),
        norm_num_groups=8, cross_attention_dim=32, attention_head_dim=8, use_linear_projection=linear_projection,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, mid_block_type="UNetMidBlock2DCrossAttn")
    return varied(unet)


def inputs(unet, batch: int = 3, length: int = 16, seed: int = 0):
    """Random latents, timesteps (early, middle, late) and text states for `unet`."""
    gen = torch.Generator().manual_seed(seed)
    size = unet.config.sample_size
    x = torch.randn((batch, 4, size, size), generator=gen)
    t = torch.tensor([5, 500, 980][:batch])
    emb = torch.randn((batch, length, unet.config.cross_attention_dim), generator=gen)
    return x, t, emb


def forward(unet, xs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The output and every unit's and transformer block's output feature."""
    store = {}
    with ExitStack() as stack, torch.no_grad():
        for name, module in [*unet_units(unet), *transformer_blocks(unet)]:
            stack.enter_context(capture_output(module, store, name))
        stack.enter_context(capture_output(unet.conv_in, store, "conv_in"))
        out = unet(xs[0], xs[1], encoder_hidden_states=xs[2]).sample
    return out, store


def permuted(unet, kind: str, seed: int = 0):
    out = copy.deepcopy(unet)
    Permute([kind], seed=seed).edit(None, out, kind)
    return out


def moved(a: torch.Tensor, b: torch.Tensor, dim: int) -> float:
    """The fraction of coordinates along `dim` whose values differ between the two features."""
    diff = (a - b).abs().movedim(dim, 0).flatten(1).amax(dim=1)
    return (diff > 1e-4 * a.abs().max()).float().mean().item()


def changed_tensors(a, b) -> int:
    sa, sb = a.state_dict(), b.state_dict()
    return sum(not torch.equal(sa[k], sb[k]) for k in sa)


def coordinates_moved(before: dict, after: dict) -> tuple[dict, dict]:
    """Fraction of channels moved per unit (dim 1) and of feature coordinates per transformer block (dim -1)."""
    units = {k: moved(v, after[k], 1) for k, v in before.items() if ".transformer_blocks." not in k}
    blocks = {k: moved(v, after[k], -1) for k, v in before.items() if ".transformer_blocks." in k}
    return units, blocks


def permuted_same_function(unet, kind: str) -> tuple[dict, dict]:
    """Permute `unet` by `kind`; check that the output is unchanged and that weights did move; return the fraction
    of coordinates moved per unit and per transformer block (`coordinates_moved`)."""
    xs = inputs(unet)
    (ref, before), attacked = forward(unet, xs), permuted(unet, kind)
    out, after = forward(attacked, xs)
    assert (out - ref).abs().max().item() < ATOL
    assert changed_tensors(unet, attacked) > 10
    return coordinates_moved(before, after)


@pytest.fixture(scope="module")
def micro_unet(world):
    return varied(world.fresh_unet().requires_grad_(False))


@pytest.mark.parametrize("kind", ["transformer", "residual", "all"])
def test_micro_permutation_preserves_the_function_and_moves_coordinates(micro_unet, kind):
    units, blocks = permuted_same_function(micro_unet, kind)
    if kind in ("residual", "all"):  # every unit's output (what AIAO reads) holds other channels
        assert micro_unet.conv_in.out_channels == 32 and units["conv_in"] > 0.5
        assert min(units.values()) > 0.5, units
    else:  # transformer alone keeps the residual stream where it was
        assert max(units.values()) == 0.0, units
    if kind in ("transformer", "all"):  # every transformer block's output (what ActiveMark reads) moved
        assert len(blocks) == 7 and min(blocks.values()) > 0.5, blocks
    else:
        assert max(blocks.values()) == 0.0, blocks


@pytest.mark.parametrize("kind", CHEAP)
def test_cheap_kinds_preserve_the_function_and_every_output_coordinate(micro_unet, kind):
    units, blocks = permuted_same_function(micro_unet, kind)
    assert max(units.values()) == 0.0 and max(blocks.values()) == 0.0


@pytest.mark.parametrize("linear_projection", [False, True])
@pytest.mark.parametrize("kind", ["all", "residual", "transformer", *CHEAP])
def test_sd_layout_permutation_preserves_the_function(kind, linear_projection):
    unet = sd_layout_unet(linear_projection)
    units, blocks = permuted_same_function(unet, kind)
    if kind in ("all", "residual"):
        assert min(units.values()) > 0.5, units
    if kind in ("all", "transformer"):
        assert min(blocks.values()) > 0.5, blocks


def test_sd_layout_has_groups_straddling_a_concatenation():
    """up_blocks.3.resnets.0 reads cat([64 hidden, 32 skip]) under 8 groups of 12: the boundary at 64 is
    inside a group, which the permutation must keep in place (the test above passing shows it does)."""
    resnet = sd_layout_unet().up_blocks[3].resnets[0]
    groups = resnet.norm1.num_groups
    assert resnet.norm1.num_channels == 96 and 64 % (96 // groups) != 0


def test_ignoring_the_groupnorm_groups_breaks_the_function():
    """The output check is sensitive: residual permutations drawn freely (not group to group) change it."""
    unet = sd_layout_unet()
    xs = inputs(unet)
    ref, _ = forward(unet, xs)
    plan = plan_residual(unet)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        plan.apply([torch.randperm(n, generator=gen) for n in plan.sizes])
    out, _ = forward(unet, xs)
    assert (out - ref).abs().max().item() > 1e-3


@pytest.mark.parametrize("n,readings", [
    (32, [(0, 32, 8), (64, 96, 8), (32, 64, 8)]),    # conv_in's stream: its own norms and two skip concatenations
    (64, [(0, 64, 8), (0, 96, 8)]),                  # a hidden stream under 8 groups of 8 and of 12
    (30, [(0, 30, 3), (0, 30, 5), (7, 100, 10)]),    # groups that do not nest
])
def test_grouped_permutation_maps_groups_to_groups(n, readings):
    perm = grouped_permutation(n, readings, torch.Generator().manual_seed(1))
    assert sorted(perm.tolist()) == list(range(n))
    assert (perm != torch.arange(n)).float().mean() > 0.5
    for offset, total, groups in readings:
        size = total // groups
        parts = {g: frozenset(range(max(0, g * size - offset), min(n, (g + 1) * size - offset)))
                 for g in range(groups)}
        parts = {g: p for g, p in parts.items() if p}
        for g, part in parts.items():
            image = frozenset(perm[sorted(part)].tolist())
            straddles = len(part) < size
            assert image == part if straddles else image in parts.values()


def test_same_seed_same_weights_other_seed_other_weights(micro_unet):
    a, b, c = (permuted(micro_unet, "all", seed) for seed in (3, 3, 4))
    assert changed_tensors(a, b) == 0 and changed_tensors(a, c) > 10


def test_unsupported_block_is_refused():
    unet = UNet2DConditionModel(block_out_channels=(32, 32), layers_per_block=1, cross_attention_dim=8,
                                attention_head_dim=8, sample_size=8, mid_block_type="UNetMidBlock2D",
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    with pytest.raises(ConfigError, match=r"does not support mid_block of type UNetMidBlock2D"):
        Permute(["all"]).edit(None, unet, "all")


@pytest.mark.parametrize("overrides,message", [
    (["attack.kinds=[all,rotate]"], r"attack.kinds has unknown kinds \['rotate'\]; choose from \['transformer', "
                                    r"'residual', 'resnet_inner', 'heads', 'ff_hidden', 'all'\]"),
    (["attack.kinds=[]"], "attack.kinds must list at least one value"),
])
def test_bad_parameters_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build(compose_cfg([*SHRINK, "attack=permute", *overrides]).attack, "attack")


def test_attack_stage_writes_the_permutation_schedule(world, tmp_path):
    node = compose_cfg([*SHRINK, "attack=permute"]).attack
    attack = build(node, "attack")
    refs, built = attack_stage(Cache(tmp_path), world, ModelRef(world.address), attack,
                               OmegaConf.to_container(node, resolve=True))
    budgets = ["none", "transformer", "residual", "all"]
    assert built and [r.step for r in refs] == [0, 1, 2, 3]
    assert [r.budget for r in refs] == budgets and {r.budget_label for r in refs} == {"permutation"}
    assert refs[0].weights is None and all(r.weights.is_file() for r in refs[1:])
    schedule = json.loads((refs[1].weights.parent.parent / "schedule.json").read_text())
    assert schedule == {"checkpoints": [0, 1, 2, 3], "budgets": budgets, "budget_label": "permutation"}
