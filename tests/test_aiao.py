"""AIAO on the micro world: the null distribution of its cosine test, the shape of its key, what it trains.
(Keys from the seed, embed -> verify, the null model, refused parameters: tests/test_contract.py; the embedding
here is the session's, `embedded("aiao")` in conftest.py.)"""
from __future__ import annotations

import pytest
import torch

from bench.errors import ConfigError
from methods.aiao import AIAO, cosine_tail, cosine_threshold
from bench.features import unet_units


def test_cosine_threshold_has_the_stated_tail():
    gen = torch.Generator().manual_seed(0)
    for dim, p0 in [(16, 0.1), (64, 0.05), (512, 0.01)]:
        tau = cosine_threshold(p0, dim)
        assert cosine_tail(tau, dim) == pytest.approx(p0, rel=1e-6)
        u = torch.nn.functional.normalize(torch.randn(200_000, dim, generator=gen), dim=1)
        assert float((u[:, 0] > tau).float().mean()) == pytest.approx(p0, rel=0.1)  # Monte Carlo


@pytest.fixture(scope="module")
def marked(micro_world, embedded):
    """(method, key, watermarked UNet): the session's embedding of conf/method/aiao.yaml."""
    e = embedded("aiao")
    return e.method, e.key, micro_world.load_model(e.marked.weights)[0]


def test_paths_end_in_lazy_units_and_triggers_are_sparse(marked):
    method, key, _ = marked
    units = key.meta["units"]
    assert len(key.meta["paths"]) == method.n_paths
    for src, dst in key.meta["paths"]:
        assert units.index(src) < units.index(dst) <= units.index(src) + method.max_span and dst in key.meta["lazy"]
    # the mask is sparse and the trigger only touches masked entries
    f = torch.randn(2, *key.tensors["mask.0"].shape)
    changed = (method._trigger(key, 0, f)(f) != f).any(dim=0)
    assert changed.float().mean() < 0.3 and not changed[key.tensors["mask.0"] == 0].any()


def test_only_lazy_units_on_a_path_are_trained(micro_world, marked):
    _, key, unet = marked
    trained = set(key.meta["trained_units"])
    assert trained and trained <= set(key.meta["lazy"])
    base = dict(unet_units(micro_world.unet))
    for name, module in unet_units(unet):
        same = all(torch.equal(p, q) for p, q in zip(module.parameters(), base[name].parameters()))
        assert same == (name not in trained), name
    assert torch.equal(unet.conv_in.weight, micro_world.unet.conv_in.weight)


def test_marked_model_matches_on_most_queries(micro_world, marked):
    """Beyond the contract's verdict: most planted sub-paths respond (the contract needs only a significant few)."""
    method, key, unet = marked
    assert method.verify(micro_world, unet, key, 6, seed=1).matches.float().mean() >= 0.5


@pytest.mark.parametrize("kwargs,message", [
    ({"lazy_fraction": 0.0}, r"lazy_fraction must be in \(0, 1\]"), ({"mask_density": 1.5}, "mask_density"),
    ({"per_query_fpr": 0.7}, r"per_query_fpr must be in \(0, 0.5\)"),
    ({"paths_per_step": 20}, r"paths_per_step must be in \[1, n_paths=16\]"),
    ({"t_range": (500, 100)}, r"t_range must be \[lo, hi\)"),
])
def test_bad_parameters_are_refused(kwargs, message):
    """Values beyond the generic checks of tests/test_contract.py: upper bounds, a combination, an order."""
    with pytest.raises(ConfigError, match=message):
        AIAO(**kwargs)
