"""Attack chains (attacks/chain.py, conf/attack/chain.yaml) on the micro world: links run in order on the previous
link's output, checkpoints are numbered along the chain and budgets name the link, bad chains are refused in one
paragraph before any work, and a whole `python -m bench attack=chain` run writes a record naming every link.

That chain.yaml changes the weights, writes its schedule and refuses bad parameters is the plugin contract's
(tests/test_contract.py runs every conf/attack/*.yaml)."""
from __future__ import annotations

import json

import pytest
import torch

import attacks.chain as chain_module
from bench.cache import Cache
from bench.diffusion import unet_state
from bench.errors import ConfigError
from bench.metrics.base import ModelRef
from bench.run.runner import build
from bench.run.stages import attack_stage
from bench.world.base import read_weights
from tests.helpers import SHRINK, bench_cli, compose_cfg, records

# a small chain: one permutation kind, then two steps of full fine-tuning (seconds on the micro world)
SMALL_LINKS = "attack.links=[{name:permute,kinds:[transformer]},{name:full_ft,steps:2,batch_size:2}]"


def chain_node(*overrides: str):
    return compose_cfg([*SHRINK, "attack=chain", *overrides]).attack


@pytest.fixture(scope="module")
def world(micro_world):
    return micro_world


@pytest.fixture(scope="module")
def source(world):
    """A model other than the base (its weights moved a little), standing in for a marked model."""
    gen = torch.Generator().manual_seed(1)
    return {k: v + 1e-2 * v.float().std().nan_to_num() * torch.randn(v.shape, generator=gen)
            if v.is_floating_point() else v for k, v in world.unet.state_dict().items()}


def run_recording(attack, world, state) -> tuple[list[int], dict, object]:
    """Run `attack` on a fresh copy of `state`; return (checkpoint ids in call order, their weights, the output)."""
    seen, weights = [], {}

    def on_checkpoint(step, model, **extra):
        seen.append(step)
        weights[step] = unet_state(model)

    out = attack.run(world, world.fresh_unet(state), on_checkpoint)
    return seen, weights, out


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_links_run_in_order_on_the_previous_links_output(world, source):
    """The chain's checkpoints are the links' own, run by hand one after the other (each from the previous link's
    final weights, read back into a fresh UNet as a file would be) with the same seeds: bit for bit."""
    attack = build(chain_node("attack.links=[{name:permute,kinds:[transformer]},"
                              "{name:full_ft,steps:2,batch_size:2,schedule:[0,1,2]}]"), "attack")
    seen, chained, out = run_recording(attack, world, source)
    assert seen == attack.checkpoints == [0, 1, 2, 3]

    permute = build(compose_cfg([*SHRINK, "attack=permute", "attack.kinds=[transformer]"]).attack, "attack")
    full_ft = build(compose_cfg([*SHRINK, "attack=full_ft", "attack.steps=2", "attack.batch_size=2",
                                 "attack.schedule=[0,1,2]"]).attack, "attack")
    _, first, first_out = run_recording(permute, world, source)
    _, second, _ = run_recording(full_ft, world, unet_state(first_out))
    assert same(chained[0], first[0])                                       # 0: the input itself
    assert same(chained[1], first[1]) and not same(chained[1], source)      # 1: the permutation
    assert same(chained[2], second[1]) and same(chained[3], second[2])      # 2, 3: full_ft on the permuted model
    assert same(unet_state(out), second[2])
    # the order matters: full_ft first, then permute, is another model
    _, swapped, _ = run_recording(full_ft, world, source)
    assert not same(swapped[2], chained[3])


def test_checkpoints_are_numbered_along_the_chain_and_budgets_name_the_link():
    attack = build(chain_node("attack.links=[permute,{name:lora_ft,steps:3}]"), "attack")
    assert attack.checkpoints == list(range(7)) and attack.budget_label == "link:budget"
    assert [attack.budget(c) for c in attack.checkpoints] == [
        "none", "permute:transformer", "permute:residual", "permute:all",
        "permute:all → lora_ft:step 1", "permute:all → lora_ft:step 2", "permute:all → lora_ft:step 3"]
    assert [link.name for link in attack.links] == ["permute", "lora_ft"] and not attack.uses_card
    threat = attack.threat_models()
    assert threat[0].startswith("permute: Threat model:") and threat[1].startswith("lora_ft: Threat model:")


def test_links_take_the_models_scale_and_the_runs_seed():
    """Each link is its own YAML at the run's scale and seed (micro: lora_ft's 20 steps, rank 4), overrides on top."""
    attack = build(chain_node("seed=3", "attack.links=[lora_ft,{name:prune,sparsities:[0.5]}]"), "attack")
    lora, prune = attack.links
    assert (lora.steps, lora.rank, lora.seed) == (20, 4, 3) and prune.values == [0.5]
    assert attack.budget(attack.checkpoints[-1]) == "lora_ft:step 20 → prune:sparsity 0.5"


def test_an_adaptive_link_makes_the_chain_read_the_card():
    attack = build(chain_node("attack.links=[permute,{name:lazy_ft,steps:2}]"), "attack")
    assert attack.uses_card and [link.uses_card for link in attack.links] == [False, True]


@pytest.mark.parametrize("links,expected", [
    ("[]", "attack.links is empty"),
    ("[none]", "attack.links[0] is 'none', which is not an attack to chain"),
    ("[permute,chain]", "attack.links[1] is 'chain', which is not an attack to chain"),
    ("[permute,no_such_attack]", "attack.links[1] is 'no_such_attack', which names no attack"),
    ("[{steps:2}]", "attack.links[0] is a mapping without a `name`"),
    ("[{name:lora_ft,no_such_setting:1}]", "attack.links[0] (lora_ft) overrides ['no_such_setting']"),
    ("[permute,{name:full_ft,steps:0}]", "attack.links[1] (full_ft): attack.steps must be at least 1"),
    ("[{name:full_ft,lr:abc}]", "attack.links[0] (full_ft): attack.lr must be a number"),
    ("[{name:full_ft,train_text_encoder:true},permute]", "only the last link may set train_text_encoder=true"),
])
def test_a_bad_chain_is_refused_in_one_paragraph(links, expected, monkeypatch):
    composed = []
    real = chain_module.compose
    monkeypatch.setattr(chain_module, "compose", lambda overrides: composed.append(overrides) or real(overrides))
    with pytest.raises(ConfigError) as err:
        build(chain_node(f"attack.links={links}"), "attack")
    message = str(err.value)
    assert expected in message and "\n" not in message and "Traceback" not in message, message
    if "names no attack" in expected or "not an attack to chain" in expected or "empty" in expected \
            or "without a `name`" in expected:
        assert composed == []  # every link's name is checked before any link is composed


def test_a_bad_chain_is_refused_by_the_cli_before_any_work(tmp_path):
    proc = bench_cli(["method=none", "attack=chain", "attack.links=[permute,none]", "-m", *SHRINK], tmp_path,
                     tmp_path / "cache", timeout=300, fork=True)
    assert proc.returncode == 2 and "attack.links[1] is 'none'" in proc.stderr and "Traceback" not in proc.stderr
    assert [p for p in tmp_path.rglob("*") if p.is_file() and "hydra" not in p.parts] == []


def test_attack_stage_writes_the_chains_schedule(world, source, tmp_path):
    node = chain_node(SMALL_LINKS)
    attack = build(node, "attack")
    from omegaconf import OmegaConf

    from bench.world.base import write_weights
    write_weights(source, tmp_path / "source.safetensors")
    refs, built = attack_stage(Cache(tmp_path / "cache"), world, ModelRef("chain-source", tmp_path / "source.safetensors"),
                               attack, OmegaConf.to_container(node, resolve=True))
    assert built and [r.step for r in refs] == [0, 1, 2, 3] and {r.budget_label for r in refs} == {"link:budget"}
    assert [r.budget for r in refs] == ["none", "permute:transformer", "permute:transformer → full_ft:step 1",
                                        "permute:transformer → full_ft:step 2"]
    (schedule,) = (tmp_path / "cache" / "attack").glob("*/schedule.json")
    assert json.loads(schedule.read_text())["checkpoints"] == [0, 1, 2, 3]
    assert all(ref.weights.is_file() for ref in refs[1:])
    assert not same(read_weights(refs[-1].weights), read_weights(refs[1].weights))


def test_a_chain_run_writes_a_complete_record_naming_every_link(shared_cache, tmp_path):
    proc = bench_cli(["method=aiao", "attack=chain", SMALL_LINKS, "-m", *SHRINK], tmp_path, shared_cache,
                     timeout=600, check=True)
    (rec,) = records(tmp_path).values()
    assert rec["status"] == "complete", rec.get("error")
    label = rec["identity"]["labels"]["attack"]
    assert label.startswith("chain[links=") and "permute" in label and "full_ft" in label, label
    assert [c["step"] for c in rec["models"]["checkpoints"]] == [0, 1, 2, 3]
    assert [c["budget"] for c in rec["models"]["checkpoints"]][-1] == "permute:transformer → full_ft:step 2"
    assert rec["config"]["attack"]["links"][0]["name"] == "permute", proc.stdout[-2000:]
