"""ActiveMark on the micro world: block selection, injection, what embedding trains, the decoded margin.
(Keys from the seed, embed -> verify, the null model, refused parameters: tests/test_contract.py; the embedding
here is the session's, `embedded("activemark")` in conftest.py.)"""
from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import binom

from bench.errors import ConfigError
from methods.activemark import ActiveMark, expressive_block, null_match_prob
from bench.features import capture_output, transformer_blocks

SMALL = dict(n_bits=16, max_bit_errors=2, n_holdout=16, enc_hidden=64, dec_hidden=64, steps=100, lr=1e-3,
             batch_size=8)


@pytest.fixture(scope="module")
def marked(micro_world, embedded):
    """(method, key, watermarked UNet): the session's embedding of conf/method/activemark.yaml."""
    e = embedded("activemark")
    return e.method, e.key, micro_world.load_model(e.marked.weights)[0]


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


def test_marked_model_decodes_with_a_margin(micro_world, marked):
    """Beyond the contract's verdicts: the per-query bit scores of the marked model clear the base model's."""
    method, key, unet = marked
    marked_ev, base_ev = (method.verify(micro_world, u, key, 16, 0) for u in (unet, micro_world.unet))
    assert marked_ev.scores.mean() > base_ev.scores.mean() + 0.3


def test_null_match_prob_matches_scipy():
    for n_bits, t in [(32, 0), (32, 4), (16, 2), (48, 7)]:
        expected = sum(math.comb(n_bits, k) for k in range(t + 1)) / 2 ** n_bits
        assert null_match_prob(n_bits, t) == pytest.approx(expected, rel=1e-12)
        assert null_match_prob(n_bits, t) == pytest.approx(binom.sf(n_bits - t - 1, n_bits, 0.5), rel=1e-12)


@pytest.mark.parametrize("bad,match", [
    (dict(n_bits=4), r"n_bits must be at least 8 \(got 4\)"), (dict(max_bit_errors=8), r"max_bit_errors .*n_bits/4"),
    (dict(margin=0.5), r"margin must be in \[0, 0.5\)"), (dict(jump_factor=1.0), "jump_factor must be above 1"),
    (dict(t_range=(500, 100)), "t_range"), (dict(null_ramp=2), "null_ramp"),
])
def test_bad_hyperparameters_raise_config_errors(bad, match):
    """Values beyond the generic checks of tests/test_contract.py: bounds other than the sign, an order."""
    with pytest.raises(ConfigError, match=match):
        ActiveMark(**bad)


def test_hold_out_inputs_and_messages_both_come_from_the_seed(micro_world):
    method = ActiveMark(n_holdout=8)
    a, c = (method.make_key(s, micro_world) for s in (0, 1))
    assert not torch.equal(a.tensors["bits"], c.tensors["bits"])
    assert not torch.equal(a.tensors["holdout_x"], c.tensors["holdout_x"])
