"""The owner's aligned verification (`metrics.verification.align=activations`, bench.permutation.align): it undoes a
permutation of a white-box mark's units, and it does not make models that never saw the key verify."""
from __future__ import annotations

import copy

import pytest
import torch
from diffusers import UNet2DConditionModel

from bench.diffusion import generator
from bench.metrics.verification import Verification
from bench.permutation import align, permute_randomly
from bench.stats import summarise
from tests.helpers import bench_cli, records, values

WHITE_BOX = ["aiao", "activemark"]


def verdict(e, world, unet) -> dict:
    return summarise(e.method.verify(world, unet, e.key, 8, e.seed), 1e-3)


@pytest.fixture(scope="module")
def probe(micro_world):
    return Verification(align="activations", align_probes=8).probe(micro_world, 0)


@pytest.mark.parametrize("name", WHITE_BOX)
def test_alignment_recovers_a_permuted_white_box_mark(micro_world, embedded, probe, name):
    e = embedded(name)
    marked = micro_world.load_model(e.marked.weights)[0]
    permuted = copy.deepcopy(marked)
    permute_randomly(permuted, "all", generator(3, "test-align"))
    assert verdict(e, micro_world, marked)["detected"]
    before = verdict(e, micro_world, permuted)
    aligned, found = align(marked, permuted, probe)
    after = verdict(e, micro_world, aligned)
    assert not before["detected"] and after["detected"], (before["p_value"], after["p_value"])
    # every unit found its original: the aligned copy is the watermarked model again, weight for weight
    ref = marked.state_dict()
    assert all(torch.allclose(v, ref[k], atol=1e-6) for k, v in aligned.state_dict().items())
    assert found["moved"] > 0.9 and found["similarity"] > 0.99
    assert set(found["by_kind"]) == {"transformer", "heads", "ff_hidden", "resnet_inner", "residual"}
    # the suspect itself is left as it was
    assert not all(torch.equal(v, ref[k]) for k, v in permuted.state_dict().items())


def test_alignment_of_an_unpermuted_model_moves_nothing(micro_world, embedded, probe):
    marked = micro_world.load_model(embedded("aiao").marked.weights)[0]
    aligned, found = align(marked, marked, probe)
    assert found["moved"] == 0
    assert all(torch.equal(v, marked.state_dict()[k]) for k, v in aligned.state_dict().items())


@pytest.mark.parametrize("name", WHITE_BOX)
def test_alignment_does_not_make_unmarked_models_verify(micro_world, embedded, probe, name):
    """An independent UNet (the world's architecture, its own initialisation) and the base model, each aligned to the
    owner's watermarked model, are still not detected: the matching moves units, it does not create the mark."""
    e = embedded(name)
    marked = micro_world.load_model(e.marked.weights)[0]
    torch.manual_seed(1234)
    independent = UNet2DConditionModel.from_config(micro_world.unet.config).eval()
    for suspect in (independent, micro_world.unet):
        aligned, found = align(marked, suspect, probe)
        assert not verdict(e, micro_world, aligned)["detected"]
        assert found["units"] > 0


def test_aligned_verification_runs_in_the_harness(shared_cache, tmp_path):
    """`metrics.verification.align=activations` in a run: the record's permuted checkpoints verify after alignment
    and the record says what alignment found; the watermarked model itself is not aligned."""
    bench_cli(["method=aiao", "attack=permute", "metrics=verification", "metrics.verification.align=activations",
               "debug=micro", "attack.kinds=[all]"], tmp_path, shared_cache, check=True)
    [rec] = records(tmp_path).values()
    v = values(rec)
    assert v["verify/watermarked/detected"] and v["verify/attacked/detected"]
    assert v["verify/attacked/align_moved"] > 0.9 and v["verify/attacked/align_seconds"] > 0
    assert rec["config"]["metrics"]["verification"]["align"] == "activations"
    points = rec["curves"]["robustness"]
    assert "align" not in points[0] and "align" in points[-1]


def test_unknown_alignment_kind_is_refused_before_any_work(tmp_path):
    proc = bench_cli(["method=aiao", "attack=permute", "metrics=verification", "metrics.verification.align=magic",
                      "debug=micro"], tmp_path, fork=True)
    assert proc.returncode == 2
    assert "metrics.verification.align must be one of ['none', 'activations']" in proc.stderr
    assert not (tmp_path / "records").exists() or not any((tmp_path / "records").iterdir())


def test_owner_verify_aligns_to_the_owners_model(micro_world, embedded, shared_cache, tmp_path):
    """`python -m bench.tools.verify KEY SUSPECT --align-to MY_MODEL`: a permuted copy of the owner's AIAO model is not
    detected as it is, and is detected once aligned; the verdict says what the alignment did. A missing --align-to
    is refused in one paragraph."""
    import json
    import os

    from safetensors.torch import save_file

    from tests.helpers import run_module
    e = embedded("aiao")
    folder = e.marked.weights.parent
    permuted = micro_world.load_model(e.marked.weights)[0]
    permute_randomly(permuted, "all", generator(5, "test-align-verify"))
    suspect = tmp_path / "permuted.safetensors"
    save_file({k: v.contiguous() for k, v in permuted.state_dict().items()}, str(suspect))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BENCH_RESULTS": str(tmp_path)}

    def verify(*args):
        return run_module("bench.tools.verify", [str(folder), str(suspect), "--cache", str(shared_cache), "--device",
                                                 "cpu", *args], env=env, timeout=600)
    plain = verify("--out", str(tmp_path / "plain.json"))
    aligned = verify("--out", str(tmp_path / "aligned.json"), "--align-to", str(e.marked.weights))
    assert plain.returncode == 0 and aligned.returncode == 0, (plain.stderr[-2000:], aligned.stderr[-2000:])
    before, after = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("plain", "aligned"))
    assert not before["detected"] and after["detected"]
    assert "align" not in before and after["align"]["moved"] > 0.9
    assert "units moved to match the owner's model" in aligned.stdout
    missing = verify("--align-to", str(tmp_path / "nowhere.safetensors"))
    assert missing.returncode == 2 and "--align-to" in missing.stderr and "does not exist" in missing.stderr
