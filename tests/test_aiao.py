"""AIAO on the micro world: the null distribution of its cosine test, what it trains, and that a short
embedding is verified while the unmarked model is not."""
from __future__ import annotations

import pytest
import torch

from bench.errors import ConfigError
from bench.stats import summarise
from methods.aiao import AIAO, cosine_tail, cosine_threshold
from methods.features import unet_units

SMALL = dict(n_paths=6, paths_per_step=2, probe_steps=5, steps=60, lr=3e-3, batch_size=4, query_batch=2)


def test_cosine_threshold_has_the_stated_tail():
    gen = torch.Generator().manual_seed(0)
    for dim, p0 in [(16, 0.1), (64, 0.05), (512, 0.01)]:
        tau = cosine_threshold(p0, dim)
        assert cosine_tail(tau, dim) == pytest.approx(p0, rel=1e-6)
        u = torch.nn.functional.normalize(torch.randn(200_000, dim, generator=gen), dim=1)
        assert float((u[:, 0] > tau).float().mean()) == pytest.approx(p0, rel=0.1)  # Monte Carlo


@pytest.fixture(scope="module")
def embedded(micro_world):
    method = AIAO(**SMALL)
    key = method.make_key(0, micro_world)
    key.meta["seed"] = 0
    return method, key, method.embed(micro_world, key)


def test_keys_come_from_the_seed(micro_world):
    method = AIAO(**SMALL)
    a, b, c = (method.make_key(s, micro_world) for s in (0, 0, 1))
    assert a.meta["paths"] == b.meta["paths"] and torch.equal(a.tensors["target.0"], b.tensors["target.0"])
    assert not torch.equal(a.tensors["target.0"], c.tensors["target.0"])
    units = a.meta["units"]
    for src, dst in a.meta["paths"]:
        assert units.index(src) < units.index(dst) and dst in a.meta["lazy"]
    # the mask is sparse and the trigger only touches masked entries
    f = torch.randn(2, *a.tensors["mask.0"].shape)
    changed = (method._trigger(a, 0, f)(f) != f).any(dim=0)
    assert changed.float().mean() < 0.3 and not changed[a.tensors["mask.0"] == 0].any()


def test_only_lazy_units_on_a_path_are_trained(micro_world, embedded):
    _, key, unet = embedded
    trained = set(key.meta["trained_units"])
    assert trained and trained <= set(key.meta["lazy"])
    base = dict(unet_units(micro_world.unet))
    for name, module in unet_units(unet):
        same = all(torch.equal(p, q) for p, q in zip(module.parameters(), base[name].parameters()))
        assert same == (name not in trained), name
    assert torch.equal(unet.conv_in.weight, micro_world.unet.conv_in.weight)


def test_watermarked_is_verified_and_unmarked_is_at_chance(micro_world, embedded):
    method, key, unet = embedded
    marked = summarise(method.verify(micro_world, unet, key, 6, seed=1), 1e-3)
    unmarked = summarise(method.verify(micro_world, micro_world.unet, key, 6, seed=1), 1e-3)
    assert marked["detected"] and marked["verification_rate"] >= 0.5
    assert not unmarked["detected"] and unmarked["verification_rate"] <= 1 / 6
    assert method.watermark_loss(micro_world, unet, key, 0) < method.watermark_loss(micro_world, micro_world.unet,
                                                                                     key, 0)


@pytest.mark.parametrize("kwargs", [{"n_paths": 0}, {"lazy_fraction": 0.0}, {"mask_density": 1.5},
                                    {"per_query_fpr": 0.7}, {"paths_per_step": 20}, {"t_range": (500, 100)}])
def test_bad_parameters_are_refused(kwargs):
    with pytest.raises(ConfigError):
        AIAO(**kwargs)
