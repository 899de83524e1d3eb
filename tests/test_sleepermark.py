"""SleeperMark: the stage-2 target and weights, what stage 2 trains, the stage-1 codec, the null model's verdict
with a trained codec, the key's shapes, particular refused values (micro world, CPU). (Keys from the seed, the
null model with the YAML's key, refused parameters in general: tests/test_contract.py.)"""
from __future__ import annotations

import pytest
import torch

from bench.errors import ConfigError
from bench.stats import summarise
from methods.sleepermark import (TRAINED, SecretEncoder, SleeperMark, load_extractor, shifted_target,
                                 timestep_weights)

# A short stage 1 that learns on the micro world in a few seconds (no VAE round trip, no noise).
SHORT_STAGE1 = dict(stage1_steps=200, stage1_lr=5e-3, stage1_batch_size=16, mse_ramp=1.0, reencode=False,
                    latent_noise=0.0)


@pytest.fixture(scope="module")
def trained_key(micro_world):
    return SleeperMark(**SHORT_STAGE1).make_key(0, micro_world)


def test_shifted_target_moves_x0_by_delta_z():
    gen = torch.Generator().manual_seed(0)
    x_t, eps0 = torch.randn(5, 4, 8, 8, generator=gen), torch.randn(5, 4, 8, 8, generator=gen)
    delta_z = torch.randn(4, 8, 8, generator=gen)
    abar = torch.tensor([0.999, 0.9, 0.5, 0.1, 0.01])
    a = abar.view(-1, 1, 1, 1)

    def x0_of(eps):
        return (x_t - (1 - a).sqrt() * eps) / a.sqrt()

    target = shifted_target(x_t, eps0, delta_z, abar)
    torch.testing.assert_close(x0_of(target), x0_of(eps0) + delta_z, rtol=1e-5, atol=1e-5)


def test_timestep_weights():
    t = torch.tensor([0, 50, 250, 900, 999])
    w1, w2 = timestep_weights(t, eta=0.02, tau=250, beta=100)
    assert (w1 <= 0.02).all() and (w1 > 0).all()
    assert w2[-2:].min() > 0.99 and w2[:1].max() < 0.1      # ~1 for t >> tau, ~0 for t << tau
    assert w1[0] > 0.9 * 0.02 and w1[-1] < 1e-3 * 0.02
    torch.testing.assert_close(w2[2], torch.tensor(0.5))


def test_stage2_trains_only_up_block_attention(micro_world):
    method = SleeperMark(stage1_steps=2, steps=3, batch_size=2, lr=1e-2)
    key = method.make_key(0, micro_world)
    unet = method.embed(micro_world, key)
    base = dict(micro_world.unet.named_parameters())
    changed = {n for n, p in unet.named_parameters() if not torch.equal(p, base[n])}
    assert changed and all(TRAINED.match(n) for n in changed)
    assert all(n.startswith("up_blocks.") and ".attentions." in n for n in changed)
    loss = method.watermark_loss(micro_world, micro_world.unet, key, seed=0)
    assert torch.isfinite(loss) and float(loss) == float(method.watermark_loss(micro_world, micro_world.unet, key, 0))


def test_stage1_codec(micro_world, trained_key):
    with torch.no_grad():
        assert float(SecretEncoder(48, (4, 8, 8), 16)(torch.randint(0, 2, (3, 48))).abs().max()) == 0.0
    encoder = SecretEncoder(48, (4, 8, 8), trained_key.meta["encoder_channels"])
    encoder.load_state_dict({k[8:]: v for k, v in trained_key.tensors.items() if k.startswith("encoder.")})
    extractor = load_extractor(trained_key)
    latents, _ = micro_world.encoded("holdout").batch(range(16))    # covers never seen in stage 1
    message = torch.randint(0, 2, (16, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        acc = float(((extractor(latents + encoder(message)) > 0).long() == message).float().mean())
        torch.testing.assert_close(encoder(trained_key.tensors["bits"][None])[0], trained_key.tensors["delta_z"])
    assert acc > 0.7, f"stage-1 extractor decodes {acc:.2f} of the bits"


def test_unmarked_model_is_not_detected(micro_world, trained_key):
    ev = SleeperMark().verify(micro_world, micro_world.unet, trained_key, n_queries=4, seed=0)
    assert ev.decoded.shape == (4, 48) and ev.kind == "bits"
    s = summarise(ev, target_fpr=1e-3)
    assert 0.25 < s["bit_acc"] < 0.75 and not s["detected"]


def test_key_shapes(trained_key):
    assert trained_key.tensors["bits"].shape == (48,) and trained_key.tensors["delta_z"].shape == (4, 8, 8)


@pytest.mark.parametrize("bad,message", [
    (dict(mse_ramp=2), r"mse_ramp is a fraction of stage 1's steps, in \[0, 1\] \(got 2\)"),
    (dict(eta=0), r"eta must be positive \(got 0\)"), (dict(beta=0), r"beta must be positive \(got 0\)"),
    (dict(trigger=" "), "trigger must be a non-empty prefix"),
])
def test_bad_hyperparameters_are_refused(bad, message):
    """Values beyond the generic checks of tests/test_contract.py: an upper bound, zero, a blank trigger."""
    with pytest.raises(ConfigError, match=message):
        SleeperMark(**bad)


def test_a_trigger_prompt_cut_at_the_tokenizer_length_warns_once_per_process(micro_world):
    """SleeperMark's prefix pushes the longest captions past the small worlds' token limit; diffusers warns on every
    encoding of such a batch, and the harness lets the first warning through and drops the copies."""
    import logging

    pipe = micro_world.pipe
    caught: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            caught.append(record)

    logger = logging.getLogger("diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion")
    handler = Keep(level=logging.WARNING)
    logger.addHandler(handler)
    from bench.world.base import _FirstTruncationOnly
    (once,) = [f for f in logger.filters if isinstance(f, _FirstTruncationOnly)]
    once.seen = False  # as in a fresh process
    long = " ".join(["trousers"] * (pipe.tokenizer.model_max_length + 4))
    try:
        for _ in range(3):
            pipe.encode_prompt([long, "a coat"], torch.device("cpu"), 1, False)
    finally:
        logger.removeHandler(handler)
    cut = [r for r in caught if "truncated" in r.getMessage()]
    assert len(cut) == 1 and "shown once per process" in cut[0].getMessage()
    assert len(pipe.tokenizer(long).input_ids) > pipe.tokenizer.model_max_length  # the prompt really is cut
