"""Bad input gets one clear paragraph, a non-zero exit before any work, and leaves no artifact."""
from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

import bench.run.runner  # noqa: F401  (loaded once here: every refusal below runs the CLI in a forked child)
from tests.helpers import MICRO, bench_cli


def _artifacts(results):
    """Files a failed start must not leave: records, cache entries, leaderboards."""
    return [p for p in results.rglob("*") if p.is_file() and "hydra" not in p.parts]


@pytest.mark.parametrize("args,expected", [
    (["method=no_such_method"], "no_such_method"),
    (["attack=no_such_attack"], "no_such_attack"),
    (["attack.lr=-0.001"], "attack.lr must be positive"),
    (["attack.steps=0"], "attack.steps must be at least 1"),
    (["method.steps=0"], "method.steps must be at least 1"),
    (["model=sd15", "model.path=/nonexistent/stable-diffusion"], "model.path folder '/nonexistent/stable-diffusion' does not exist"),
    (["model=micro", "data=coco_cub"], "data.roots.coco is not set"),
    (["seed=abc"], "seed must be an integer (got 'abc'"),
    (["seed=1.5"], "seed must be an integer (got 1.5"),
    (["attack.lr_scheduler=exponential"], "attack.lr_scheduler must be one of"),
    (["attack.lr_warmup_steps=10"], "use attack.lr_scheduler=constant_with_warmup"),
    (["method=roma", "method.direction=none"], "method.direction=none with method.same_batch=true"),
    (["attack=permute", "attack.kinds=[sideways]"], "attack.kinds has unknown kinds ['sideways']"),
    (["attack=lazy_ft", "attack.mode=delete"], "attack.mode must be 'finetune' or 'reinit'"),
    (["attack=trigger_ft", "attack.trigger_source=oracle"], "attack.trigger_source must be 'public'"),
    (["attack=lora_ft", "attack.rank_fraction=2"], "attack.rank_fraction must be in (0, 1]"),
    (["attack=erase_recover", "attack.mismatch=random"], "attack.mismatch must be one of ['shuffle', 'noise']"),
    (["search=full_ft"], "python -m bench.tools.search full_ft method=NAME"),
    (["metrics.utility.max_owner_loss_ratio=0.5"], "metrics.utility.max_owner_loss_ratio must be at least 1"),
    (["model.train_precision=fp8"], "model.train_precision must be one of ['fp32', 'bf16', 'fp16']"),
    (["model.train_precision=fp16", "device=cpu"], "model.train_precision=fp16 was requested on the CPU"),
    (["+hydra.launcher.gpus_per_node=1"], "the launcher is BasicLauncher, which runs every job in this process"),
    pytest.param(["hydra/launcher=local", "hydra.launcher.gpus_per_node=1"], "which has 0 CUDA device(s) visible",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
])
def test_bad_config_is_refused_cleanly(tmp_path, args, expected):
    world = [] if any(a.startswith("model=") for a in args) else MICRO
    proc = bench_cli([*world, *args, "-m"], tmp_path, tmp_path / "cache", timeout=300, fork=True)
    assert proc.returncode != 0
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _artifacts(tmp_path) == []


def test_pickle_checkpoint_is_refused(tmp_path):
    evil = tmp_path / "unet.ckpt"

    class Payload:
        def __reduce__(self):
            return (print, ("this would run arbitrary code",))

    evil.write_bytes(pickle.dumps({"state_dict": Payload()}))
    proc = bench_cli([*MICRO, "model.unet_weights=" + str(evil), "-m"], tmp_path / "results", tmp_path / "cache", timeout=300, fork=True)
    assert proc.returncode == 2
    assert "Refusing to load" in proc.stderr and "safetensors" in proc.stderr
    assert "this would run arbitrary code" not in proc.stdout + proc.stderr
    assert _artifacts(tmp_path / "results") == []


def test_corrupt_safetensors_is_refused(tmp_path):
    bad = tmp_path / "unet.safetensors"
    save_file({"w": torch.zeros(4)}, str(bad))
    bad.write_bytes(bad.read_bytes()[:20])  # truncated
    proc = bench_cli([*MICRO, "model.unet_weights=" + str(bad), "-m"], tmp_path / "results", tmp_path / "cache", timeout=300, fork=True)
    assert proc.returncode == 2 and "corrupt or truncated" in proc.stderr


def test_a_label_given_to_two_configurations_is_refused_before_any_work(tmp_path):
    # its own cache: the forked CLI runs torch on one thread, and the shared cache's figures are the default threads'
    cache = tmp_path / "cache"
    from tests.helpers import SHRINK
    results = tmp_path / "results"
    first = bench_cli(["method=none", "attack=none", "method.label=mine", "-m", *SHRINK], results, cache, fork=True)
    assert first.returncode == 0, first.stderr[-2000:]
    before = sorted(p.name for p in (cache).glob("*/*"))
    second = bench_cli(["method=watermarkdm", "attack=none", "method.label=mine", "-m", *SHRINK], results,
                       cache, fork=True)
    assert second.returncode == 2 and "The method label 'mine' names 2 different method configurations" in second.stderr
    assert "Traceback" not in second.stderr
    assert sorted(p.name for p in (cache).glob("*/*")) == before  # no work was done
    assert len(list((results / "records").glob("*/record.json"))) == 1
