"""`python -m bench.tools.verify`: the owner's verdict on a suspect model, on the micro world.

One micro-world watermarkdm run (attack=none) in the session cache gives the embed folder; every
verification rebuilds the world from that cache (seconds)."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from tests.helpers import SHRINK, bench_cli, compose_cfg, records, run_module


@pytest.fixture(scope="module")
def embed(shared_cache, tmp_path_factory) -> Path:
    """The embed artifact folder of a micro watermarkdm run (the parent of its record's key.folder)."""
    results = tmp_path_factory.mktemp("verify-results")
    bench_cli(["method=watermarkdm", "attack=none", "-m", *SHRINK], results, shared_cache, check=True)
    (rec,) = records(results).values()
    folder = Path(rec["key"]["folder"]).parent
    assert folder.parent == shared_cache / "embed" and (folder / "unet.safetensors").is_file()
    return folder


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    """$BENCH_RESULTS for the verifications: where their JSON goes by default."""
    return tmp_path_factory.mktemp("verify-results")


@pytest.fixture(scope="module")
def verify(shared_cache, results_dir):
    """Run `python -m bench.tools.verify ARGS --cache <shared cache>` (one thread), in a forked child of this process
    (`run_module`: the command's own `__main__`, exit status and output, without re-importing torch each time)."""
    import bench.tools.verify  # noqa: F401  # imported once, before the forks

    def run(*args) -> subprocess.CompletedProcess:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "BENCH_RESULTS": str(results_dir)}
        return run_module("bench.tools.verify", [*map(str, args), "--cache", str(shared_cache), "--device", "cpu"],
                          env=env, timeout=600)
    return run


def ok(proc: subprocess.CompletedProcess, out: Path) -> dict:
    """The JSON of a verification that must have succeeded."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def refused(proc: subprocess.CompletedProcess, *words: str) -> str:
    """stderr of a verification that must have been refused (status 2, one `error:` paragraph, no traceback)."""
    assert proc.returncode == 2, (proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and "error: " in proc.stderr
    paragraph = proc.stderr.split("error: ", 1)[1].strip()
    assert "\n" not in paragraph, paragraph
    for word in words:
        assert word.lower() in paragraph.lower(), paragraph
    return paragraph


@pytest.fixture(scope="module")
def marked(embed, verify, tmp_path_factory) -> dict:
    """The watermarked UNet's verification: (stdout, JSON)."""
    out = tmp_path_factory.mktemp("verify-out") / "marked.json"
    proc = verify(embed, embed / "unet.safetensors", "--out", out)
    return {"stdout": proc.stdout, **ok(proc, out)}


@pytest.fixture(scope="module")
def base_file(micro_world, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("suspects") / "base.safetensors"
    save_file({k: v.contiguous() for k, v in micro_world.unet.state_dict().items()}, str(path))
    return path


def test_watermarked_unet_is_detected(marked, embed):
    assert marked["method"] == "watermarkdm" and marked["detected"] is True
    assert marked["p_value"] < marked["target_fpr"] == 1e-3
    assert marked["n_queries"] == compose_cfg(SHRINK).model.eval.n_queries  # the key's world: the micro test size
    assert marked["bit_acc"] > 0.6 and marked["summary"]["p_value"] == marked["p_value"]
    assert marked["key"]["kind"] == "embed" and marked["key"]["address"] == embed.name
    assert marked["suspect"] == str((embed / "unet.safetensors").resolve())
    assert {"verify", "world", "total"} <= set(marked["timings"]) and "verification_rate" in marked
    assert "DETECTED at FPR 1e-3" in marked["stdout"] and "watermarkdm" in marked["stdout"]
    assert f"{marked['p_value']:.3g}" in marked["stdout"]


def test_base_and_independent_unets_are_not_detected(embed, verify, micro_world, base_file, tmp_path, results_dir):
    from diffusers import UNet2DConditionModel
    proc = verify(embed, base_file, "--out", tmp_path / "base.json")
    base = ok(proc, tmp_path / "base.json")
    assert not base["detected"] and base["p_value"] > 1e-3 and "not detected at FPR 1e-3" in proc.stdout
    torch.manual_seed(12345)
    other = UNet2DConditionModel.from_config(micro_world.unet.config)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "other.safetensors"))
    proc = verify(embed, tmp_path / "other.safetensors")  # JSON in $BENCH_RESULTS/verify/ by default
    (written,) = (results_dir / "verify").glob("other.safetensors.*.verify.json")  # unique per suspect and key
    assert not ok(proc, written)["detected"]
    assert "not detected" in proc.stdout


def test_diffusers_folder_suspect(embed, verify, micro_world, base_file, tmp_path):
    micro_world.unet.save_pretrained(str(tmp_path / "pipe" / "unet"), safe_serialization=True)
    result = ok(verify(embed, tmp_path / "pipe", "--out", tmp_path / "r.json"), tmp_path / "r.json")
    assert result["suspect_kind"] == "diffusers folder" and not result["detected"]
    base = ok(verify(embed, base_file, "--out", tmp_path / "b.json"), tmp_path / "b.json")
    assert result["p_value"] == base["p_value"]  # the same UNet, as a folder or as a file


def test_export_gives_the_same_verdict(embed, verify, marked, tmp_path):
    from bench.tools.verify import main
    assert main(["export", str(embed), str(tmp_path / "key")]) == 0
    files = sorted(str(p.relative_to(tmp_path / "key")) for p in (tmp_path / "key").rglob("*") if p.is_file())
    assert files == ["commitment.json", "data.json", "export.json", "key/key.safetensors", "key/key_meta.json",
                     "key/opening.json", "method.json", "world.json"]  # never the watermarked weights
    meta = json.loads((tmp_path / "key" / "export.json").read_text())
    assert meta["format"] == 1 and meta["embed_address"] == embed.name and meta["seed"] == 0 and meta["date"]
    result = ok(verify(tmp_path / "key", embed / "unet.safetensors", "--out", tmp_path / "e.json"), tmp_path / "e.json")
    assert result["key"]["kind"] == "export" and result["p_value"] == marked["p_value"] and result["detected"]
    assert main(["export", str(embed), str(tmp_path / "key")]) == 2  # never overwrites


@pytest.mark.parametrize("name", ["evil.pt", "evil.bin"])
def test_pickle_suspect_is_refused_unrun(embed, verify, tmp_path, name):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return open, (str(marker), "w")

    (tmp_path / name).write_bytes(pickle.dumps(Evil()))
    proc = verify(embed, tmp_path / name)
    paragraph = refused(proc)
    assert "pickle" in paragraph or "weights_only" in paragraph
    assert not marker.exists() and not list(tmp_path.glob("*.json"))


def test_architecture_mismatch_is_refused(embed, verify, micro_world, tmp_path):
    from diffusers import UNet2DConditionModel
    other = UNet2DConditionModel.from_config({**micro_world.unet.config, "block_out_channels": [16, 32]})
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "wide.safetensors"))
    refused(verify(embed, tmp_path / "wide.safetensors", "--out", tmp_path / "x.json"), "architecture",
            "conv_in.weight: (16, 4, 3, 3) vs (32, 4, 3, 3)")
    other.save_pretrained(str(tmp_path / "wide"), safe_serialization=True)  # a unet/ folder: the config differs too
    refused(verify(embed, tmp_path / "wide", "--out", tmp_path / "x.json"), "block_out_channels: [16, 32] vs [32, 64]")
    assert not (tmp_path / "x.json").exists()


def test_bad_suspect_paths_are_refused(embed, verify, tmp_path):
    refused(verify(embed, tmp_path / "nowhere.safetensors", "--out", tmp_path / "x.json"), "does not exist")
    (tmp_path / "s" / "unet").mkdir(parents=True)  # the verdict may not go inside a suspect folder
    (tmp_path / "s" / "unet" / "config.json").write_text("{}")
    (tmp_path / "s" / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"not loaded")
    refused(verify(embed, tmp_path / "s", "--out", tmp_path / "x.json"), "safetensors", "never loaded")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 64)
    refused(verify(embed, tmp_path / "broken.safetensors", "--out", tmp_path / "x.json"), "corrupt")
    assert not (tmp_path / "x.json").exists()


def test_bad_keys_are_refused(embed, verify, base_file, tmp_path):
    refused(verify(tmp_path, base_file, "--out", tmp_path / "x.json"), "not a key folder")
    shutil.copytree(embed, tmp_path / "partial", ignore=shutil.ignore_patterns("unet.safetensors", "key_meta.json"))
    refused(verify(tmp_path / "partial", base_file, "--out", tmp_path / "x.json"), "missing key/key_meta.json")
    refused(verify(embed, base_file, "--method", "sleepermark", "--out", tmp_path / "x.json"),
            "made by method watermarkdm", "not sleepermark")
    from bench.tools.verify import export
    export(embed, tmp_path / "aiao")  # the key files of watermarkdm, the method config of AIAO
    aiao = OmegaConf.to_container(compose_cfg([*SHRINK, "method=aiao"]).method, resolve=True)
    (tmp_path / "aiao" / "method.json").write_text(json.dumps(aiao))
    refused(verify(tmp_path / "aiao", base_file, "--out", tmp_path / "x.json"), "does not belong to method aiao",
            "mask.*")
    assert not (tmp_path / "x.json").exists()


def test_key_that_fails_inside_the_verifier_is_refused(embed, base_file, tmp_path, monkeypatch, capsys):
    """With the static check off, a key lacking what verify reads fails there and is still one paragraph."""
    from bench.tools.verify import export, main
    export(embed, tmp_path / "k")
    for name in ("commitment.json", "key/opening.json"):  # an uncommitted key (an edited committed one stops earlier)
        (tmp_path / "k" / name).unlink()
    meta = json.loads((tmp_path / "k" / "key" / "key_meta.json").read_text())
    (tmp_path / "k" / "key" / "key_meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "grid"}))
    monkeypatch.setattr("methods.watermarkdm.TriggerBackdoor.key_meta", ())  # past the key check: the verifier itself refuses
    assert main([str(tmp_path / "k"), str(base_file), "--cache", str(embed.parents[1]), "--device", "cpu",
                 "--n-queries", "2", "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "does not belong to method watermarkdm" in err and "'grid'" in err and not (tmp_path / "x.json").exists()
