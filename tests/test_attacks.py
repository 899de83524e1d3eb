"""The attacks' own semantics on the micro world (real config, tiny budgets): what each checkpoint's budget means,
what an edit does, particular refused values. That every attack runs, writes its schedule, changes the weights
and refuses bad parameters is the plugin contract's (tests/test_contract.py)."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from attacks.lora_ft import attention_module_suffixes
from bench.cache import Cache
from bench.errors import ConfigError
from bench.metrics.base import ModelRef
from bench.run.runner import build
from bench.run.stages import attack_stage
from tests.helpers import SHRINK, compose_cfg

# attack -> (overrides giving a tiny budget, expected checkpoint budgets, budget label)
ATTACKS = {
    "full_ft": (["attack.steps=2", "attack.batch_size=2"], [0, 1, 2], "step"),
    "lora_ft": (["attack.steps=2", "attack.batch_size=2", "attack.rank=2"], [0, 1, 2], "step"),
    "partial_ft": (["attack.steps=2", "attack.batch_size=2", "attack.blocks=[up_blocks.1,mid_block]"], [0, 1, 2],
                   "step"),
    "dreambooth": (["attack.steps=2", "attack.n_images=2", "attack.n_class_images=2"], [0, 1, 2], "step"),
    "distill": (["attack.steps=2", "attack.batch_size=2"], [0, 1, 2], "step"),
    "prune": (["attack.sparsities=[0.3,0.9]"], [0.0, 0.3, 0.9], "sparsity"),
    "quantize": ([], ["fp32", "int8", "fp16", "bf16"], "format"),
    "noise": (["attack.scales=[0.01,0.1]"], [0.0, 0.01, 0.1], "relative noise"),
    # the adaptive ones (without a method card: trigger_ft tries its guesses, the probes use their defaults)
    "trigger_ft": (["attack.steps=2", "attack.batch_size=2"], [0, 1, 2], "step"),
    "lazy_ft": (["attack.steps=2", "attack.batch_size=2", "attack.probe_steps=2", "attack.probe_batch_size=2"],
                [0, 1, 2], "step"),
    "expressive_ft": (["attack.steps=2", "attack.batch_size=2", "attack.n_probe=4"], [0, 1, 2], "step"),
    "erase_recover": (["attack.erase_steps=1", "attack.steps=1", "attack.batch_size=2"], [0, 1, 2], "step"),
    "merge": (["attack.partner=finetuned", "attack.ft_steps=2", "attack.ft_batch_size=2", "attack.coefficients=[0.5]"],
              [0.0, 0.5], "merge coefficient"),
}


def attack_cfg(name: str, overrides: list[str]):
    """The attack's config node from the real config, with `overrides` and a schedule of every step."""
    steps = ["attack.schedule=[0,1,2]"] if any(o.startswith("attack.steps=") for o in overrides) else []
    return compose_cfg([*SHRINK, f"attack={name}", *overrides, *steps]).attack


@pytest.fixture(scope="module")
def world(micro_world):
    return micro_world


@pytest.mark.parametrize("name", list(ATTACKS))
def test_checkpoint_budgets(name):
    """What each checkpoint id means: the step for training attacks, the budget value for weight edits."""
    overrides, budgets, label = ATTACKS[name]
    attack = build(attack_cfg(name, overrides), "attack")
    assert attack.checkpoints == list(range(len(budgets)))
    assert [attack.budget(c) for c in attack.checkpoints] == budgets and attack.budget_label == label


def test_erase_recover_mismatches_every_caption_and_numbers_both_phases():
    from attacks.erase_recover import derangement
    for n in (2, 3, 17):
        for seed in range(5):
            other = derangement(n, torch.Generator().manual_seed(seed))
            assert sorted(other.tolist()) == list(range(n))  # a permutation of the attacker's items
            assert all(other[i] != i for i in range(n))  # no image keeps its own caption
    attack = build(attack_cfg("erase_recover", ["attack.erase_steps=7", "attack.steps=5"]), "attack")
    assert attack.checkpoints[-1] == 12 and 7 in attack.checkpoints  # the end of the erase phase is a checkpoint
    assert attack.steps == 5  # the recovery's own optimiser and lr schedule run over its steps


def test_merge_with_base_interpolates(world, tmp_path):
    """partner=base: coefficient c moves a perturbed input exactly c of the way back to the base."""
    attack = build(attack_cfg("merge", ["attack.coefficients=[0.25]"]), "attack")
    marked = {k: v + 1.0 for k, v in world.unet.state_dict().items()}
    unet, out = world.fresh_unet(marked), {}
    attack.run(world, unet, lambda i, model: out.update({i: {k: v.clone() for k, v in model.state_dict().items()}}))
    k = "conv_in.weight"
    assert torch.allclose(out[1][k], marked[k] - 0.25, atol=1e-6) and torch.equal(out[0][k], marked[k])


def test_prune_reaches_its_sparsity(world):
    attack = build(attack_cfg("prune", ["attack.sparsities=[0.5]"]), "attack")
    unet, zeros = world.fresh_unet(), {}

    def count(i, model):
        weights = [m.weight for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
        zeros[i] = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)

    attack.run(world, unet, count)
    assert zeros[0] < 0.01 and abs(zeros[1] - 0.5) < 0.01


def test_lora_targets_are_derived_from_diffusers():
    assert {"to_q", "to_k", "to_v", "to_out.0", "attn2.to_k", "proj_in"} <= attention_module_suffixes()
    assert not {"conv1", "0", "time_embedding.linear_1"} & attention_module_suffixes()


@pytest.mark.parametrize("name,overrides,message", [
    ("prune", ["attack.sparsities=[0.5,1.0]"], r"attack.sparsities must lie in \[0, 1\) \(got \[1.0\]"),
    ("prune", ["attack.sparsities=[-0.1]"], r"attack.sparsities must lie in \[0, 1\)"),
    ("prune", ["attack.sparsities=[]"], "attack.sparsities must list at least one value"),
    ("lora_ft", ["attack.rank=0"], r"attack.rank must be at least 1 \(got 0\)"),
    ("lora_ft", ["attack.target_modules=[to_q,to_qq]"], r"attack.target_modules .* \['to_qq'\]. Use"),
    ("lora_ft", ["attack.steps=0"], r"attack.steps must be at least 1 \(got 0\)"),
    ("dreambooth", ["attack.n_images=0"], "attack.n_images must be at least 1"),
    ("quantize", ["attack.formats=[int4]"], r"attack.formats has unknown formats \['int4'\]"),
    ("noise", ["attack.scales=[-1]"], "attack.scales must be non-negative"),
    ("trigger_ft", ["attack.trigger_target=base"], "attack.trigger_target must be 'noise'"),
    ("merge", ["attack.coefficients=[1.5]"], r"attack.coefficients must lie in \[0, 1\]"),
    ("merge", ["attack.partner=other"], "attack.partner must be one of"),
    ("merge", ["attack.ft_steps=0"], "attack.ft_steps must be at least 1"),
])
def test_bad_parameters_are_refused(name, overrides, message):
    with pytest.raises(ConfigError, match=message):
        build(attack_cfg(name, overrides), "attack")


def test_trigger_ft_targets(world):
    """With WatermarkDM's card (prompt trigger `[V]`): the default re-teaches the trigger with the true noise, and
    its first step's loss equals a hand computation of |eps([V]) - noise|^2 + |eps(caption) - eps_0(caption)|^2
    (0 at step 0 for the keep term); `frozen` (version 1) starts at the much smaller |eps([V]) - eps_0('')|^2."""
    from bench.diffusion import encode_prompts, generator, sample_noise_and_t, training_scheduler
    from methods.base import MethodCard
    card = MethodCard("watermarkdm", "black-box", "prompt", {"trigger": "[V]"})
    losses = {}
    for target in ("noise", "frozen"):
        attack = build(attack_cfg("trigger_ft", ["attack.steps=1", "attack.batch_size=2", "attack.schedule=[0,1]",
                                                 f"attack.trigger_target={target}"]), "attack")
        seen = []
        attack.train = lambda params, loss_fn, **kw: seen.append(float(loss_fn(0).detach()))  # one loss, no update
        attack.run(world, world.fresh_unet(), lambda i, m: None, card)
        losses[target] = seen[0]
    # by hand, with the attack's own random streams
    data, sched = world.encoded("attacker"), training_scheduler(world.pipe)
    gen = generator(0, "trigger_ft")
    idx = torch.randint(0, len(data), (2,), generator=gen)
    latents, emb = data.batch(idx)
    torch.randint(0, 1, (1,), generator=gen)  # the trigger draw (one trigger)
    noise, t = sample_noise_and_t(latents, sched.config.num_train_timesteps, gen)
    noisy = sched.add_noise(latents, noise, t)
    with torch.no_grad():
        unet = world.fresh_unet().eval()
        trig = unet(noisy, t, encoder_hidden_states=encode_prompts(world.pipe, ["[V]"]).expand_as(emb)).sample
        plain = unet(noisy, t, encoder_hidden_states=encode_prompts(world.pipe, [""]).expand_as(emb)).sample
    assert abs(losses["noise"] - float(((trig - noise) ** 2).mean())) < 1e-4 * max(1.0, losses["noise"])
    assert abs(losses["frozen"] - float(((trig - plain) ** 2).mean())) < 1e-5 + 1e-3 * losses["frozen"]
    assert losses["frozen"] < losses["noise"]


def test_adaptive_attacks_read_the_rules_a_card_declares(world):
    """lazy_ft takes the probe settings, and expressive_ft a fixed block, from a card whose method follows their rule
    ("lazy_units", "expressive_block"); a card without the rule (whatever its name) gives the attack's defaults."""
    from attacks.lazy_ft import AIAO_PUBLIC
    from methods.base import MethodCard
    lazy = build(attack_cfg("lazy_ft", []), "attack")
    probe = {"probe_steps": 7, "probe_lr": 0.5, "probe_batch_size": 3, "lazy_fraction": 0.25}
    aiao = build(compose_cfg([*SHRINK, "method=aiao"]).method, "method")
    assert lazy.settings_from(aiao.card(probe)) == probe
    assert lazy.settings_from(MethodCard("aiao", "white-box", None, probe)) == AIAO_PUBLIC  # a name is not a rule
    expressive = build(attack_cfg("expressive_ft", []), "attack")
    activemark = build(compose_cfg([*SHRINK, "method=activemark"]).method, "method")
    assert expressive.find_block(world, None, activemark.card({"block": 3})) == 3


def test_unknown_block_is_refused_before_training(world):
    attack = build(attack_cfg("partial_ft", ["attack.blocks=[up_block]"]), "attack")
    seen = []
    with pytest.raises(ConfigError, match=r"'up_block'.*top-level blocks are \['conv_in', .*'up_blocks'"):
        attack.run(world, world.fresh_unet(), lambda i, model: seen.append(i))
    assert seen == []


def test_robustness_curve_carries_budgets():
    """Verification puts each checkpoint's budget into the curve and reports the budget at removal."""
    from types import SimpleNamespace

    from bench.metrics.verification import Verification
    from bench.metrics.base import ModelRef
    refs = [ModelRef("in", None, 0, 0.0, "sparsity")] + [ModelRef(f"in@{i}", None, i, s, "sparsity")
                                                             for i, s in [(1, 0.1), (2, 0.5)]]
    collector = Verification()
    collector.verify_one = lambda ctx, ref: {"bit_acc": 1.0, "p_value": 0.0, "detected": ref.address != "in@2",
                                          "detection_rate": 1.0, "verification_rate": 1.0}
    ctx = SimpleNamespace(method=SimpleNamespace(verifiable=True), watermarked=refs[0], base=ModelRef("base"),
                          attacked=refs, null_attacked=refs[:1])
    out = collector.compute(ctx)
    assert out["metrics"]["steps_to_removal"]["value"] == 2 and out["metrics"]["removal_budget"]["value"] == 0.5
    assert [(p["budget"], p["budget_label"]) for p in out["curves"]["robustness"]][1] == (0.1, "sparsity")


def test_full_ft_can_train_the_text_encoder_and_evaluation_uses_it(world, tmp_path):
    """attack.train_text_encoder=true: checkpoints carry a changed text encoder next to the UNet, and inside
    `world.text_encoder_as` (what every metric uses for such a checkpoint) prompts encode through it; outside,
    the world's own encoder is back bit for bit."""
    from bench.diffusion import encode_prompts, text_states
    from bench.metrics.base import EvalContext

    node = attack_cfg("full_ft", ["attack.steps=2", "attack.batch_size=2", "attack.train_text_encoder=true"])
    refs, _ = attack_stage(Cache(tmp_path), world, ModelRef(world.address), build(node, "attack"),
                           OmegaConf.to_container(node, resolve=True))
    unet, text_state = world.load_model(refs[-1].weights)
    base_text = world.pipe.text_encoder.state_dict()
    assert text_state is not None and set(text_state) == set(base_text)
    assert any(not torch.equal(text_state[k], base_text[k].cpu()) for k in base_text)
    assert any(not torch.equal(v, world.unet.state_dict()[k]) for k, v in unet.state_dict().items())
    prompts = ["a photo of a sneaker"]
    before = encode_prompts(world.pipe, prompts)
    tuned = world.fresh_text_encoder(text_state).eval()
    ctx = EvalContext(world=world, method=None, key=None, key_address="", cache=Cache(tmp_path), seed=0, data_key={},
                      base=refs[0], watermarked=refs[0], attacked=refs, null_attacked=refs)
    with ctx.model(refs[-1]) as inside:
        assert inside is ctx.weights(refs[-1])[0]
        with torch.no_grad():
            expected = text_states(world.pipe.tokenizer, tuned, prompts)
        assert torch.allclose(encode_prompts(world.pipe, prompts), expected, atol=1e-6)
        assert not torch.allclose(encode_prompts(world.pipe, prompts), before)
    assert torch.equal(encode_prompts(world.pipe, prompts), before)
    assert build(attack_cfg("partial_ft", ["attack.steps=2", "+attack.train_text_encoder=true"]), "attack")
    full_ft_only = attack_cfg("lora_ft", ["attack.steps=2", "+attack.train_text_encoder=true"])
    with pytest.raises(ConfigError, match="train_text_encoder"):  # attacks whose loop has no text encoder refuse it
        build(full_ft_only, "attack")
