"""ActiveMark on the micro world: block selection, injection, what embedding trains, verification."""
from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import binom

from bench.errors import ConfigError
from bench.stats import summarise
from methods.activemark import ActiveMark, expressive_block, null_match_prob
from methods.features import capture_output, transformer_blocks

SMALL = dict(n_bits=16, max_bit_errors=2, n_holdout=16, enc_hidden=64, dec_hidden=64, steps=100, lr=1e-3,
             batch_size=8)


@pytest.fixture(scope="module")
def marked(micro_world):
    """(method, key, watermarked UNet) after a short embedding on the micro world."""
    method = ActiveMark(**SMALL)
    key = method.make_key(0, micro_world)
    return method, key, method.embed(micro_world, key)


def test_expressive_block_is_the_first_sharp_jump():
    assert expressive_block([1.0, 1.1, 1.2, 5.0, 6.0, 30.0, 31.0], jump_factor=2.0, last=5) == 3
    assert expressive_block([1.0, 1.1, 1.2, 5.0, 6.0, 30.0, 31.0], jump_factor=5.0, last=5) == 5
    # no jump: the largest increase (ExpressPrint's rule), within 1..last
    assert expressive_block([1.0, 1.2, 1.5, 1.6, 2.5], jump_factor=2.0, last=3) == 2
    assert expressive_block([3.0, 1.0], jump_factor=2.0, last=0) == 0


def test_forced_block_and_out_of_range_block(micro_world):
    n = len(transformer_blocks(micro_world.unet))
    key = ActiveMark(block=1, n_holdout=4).make_key(0, micro_world)
    assert key.meta["block"] == 1 and key.meta["read_block"] == n - 1
    with pytest.raises(ConfigError, match="out of range"):
        ActiveMark(block=n - 1, n_holdout=4).make_key(0, micro_world)


def test_encoder_overwrites_exactly_one_token(micro_world):
    method = ActiveMark(block=2, n_holdout=4, **{k: v for k, v in SMALL.items() if k != "n_holdout"})
    key = method.make_key(0, micro_world)
    meta, unet = key.meta, micro_world.unet
    enc, _ = method._mlps(meta, "cpu")
    block = transformer_blocks(unet)[meta["block"]][1]
    x, t, emb = (key.tensors[k] for k in ("holdout_x", "holdout_t", "holdout_emb"))
    plain, injected = {}, {}
    with torch.no_grad():
        with capture_output(block, plain):
            unet(x, t, encoder_hidden_states=emb)
        with method.wired(unet, meta, enc, key.tensors["bits"]), capture_output(block, injected):
            unet(x, t, encoder_hidden_states=emb)
    changed = (plain["out"] != injected["out"]).any(dim=-1).any(dim=0)  # per token
    assert changed.nonzero().flatten().tolist() == [meta["token"]]


def test_embedding_trains_only_the_blocks_after_the_expressive_one(micro_world, marked):
    _, key, unet = marked
    trained = {name for name, _ in transformer_blocks(unet)[key.meta["block"] + 1:]}
    base, after = micro_world.unet.state_dict(), unet.state_dict()
    changed = {k for k in base if not torch.equal(base[k], after[k])}
    assert changed and all(any(k.startswith(name + ".") for name in trained) for k in changed)


def test_marked_model_decodes_and_base_model_is_not_detected(micro_world, marked):
    method, key, unet = marked
    marked_ev, base_ev = (method.verify(micro_world, u, key, 16, 0) for u in (unet, micro_world.unet))
    assert marked_ev.scores.mean() > base_ev.scores.mean() + 0.3
    losses = [method.watermark_loss(micro_world, u, key, 0) for u in (unet, micro_world.unet)]
    assert losses[0] < losses[1]
    assert summarise(marked_ev, 1e-3)["detected"]
    assert not summarise(base_ev, 1e-3)["detected"]


def test_null_match_prob_matches_scipy():
    for n_bits, t in [(32, 0), (32, 4), (16, 2), (48, 7)]:
        expected = sum(math.comb(n_bits, k) for k in range(t + 1)) / 2 ** n_bits
        assert null_match_prob(n_bits, t) == pytest.approx(expected, rel=1e-12)
        assert null_match_prob(n_bits, t) == pytest.approx(binom.sf(n_bits - t - 1, n_bits, 0.5), rel=1e-12)


@pytest.mark.parametrize("bad,match", [
    (dict(n_bits=4), "n_bits"), (dict(max_bit_errors=8), "max_bit_errors"), (dict(margin=0.5), "margin"),
    (dict(block=-1), "block"), (dict(jump_factor=1.0), "jump_factor"), (dict(n_holdout=0), "n_holdout"),
    (dict(t_range=(500, 100)), "t_range"), (dict(steps=0), "steps"), (dict(lr=0), "lr"),
    (dict(null_weight=-1), "null_weight"), (dict(null_ramp=2), "null_ramp"), (dict(inject_scale=-1), "inject_scale"),
])
def test_bad_hyperparameters_raise_config_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        ActiveMark(**bad)


def test_keys_are_drawn_from_the_seed(micro_world):
    method = ActiveMark(n_holdout=8)
    a, b, c = (method.make_key(s, micro_world) for s in (0, 0, 1))
    assert a.meta == b.meta and all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert not torch.equal(a.tensors["bits"], c.tensors["bits"])
    assert not torch.equal(a.tensors["holdout_x"], c.tensors["holdout_x"])
