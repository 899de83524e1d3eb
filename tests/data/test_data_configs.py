"""`data=coco_cub` and `data=imagefolder`: the real-data configs read users' folders in the published layouts."""
from __future__ import annotations

import pytest
import torch

from bench.cache import link_stages
from bench.errors import ConfigError, DatasetNotFoundError
from bench.run.runner import build
from tests.helpers import SHRINK, bench_cli, compose_cfg, records, values

FIXTURE_COCO = ["data.owner.split=val"]  # the COCO fixture has the val split only


def _data(overrides):
    return build(compose_cfg(["model=micro", *overrides]).data, "data")


def test_coco_cub_reads_three_splits(coco_root, cub_root):
    data = _data(["data=coco_cub", f"data.roots.coco={coco_root}", f"data.roots.cub={cub_root}", *FIXTURE_COCO])
    assert (len(data.owner), len(data.attacker), len(data.holdout)) == (3, 2, 3)  # COCO val 3; CUB train ids 1, 3
    image, caption = data.attacker[0]
    assert image.shape == (3, 32, 32) and -1 <= float(image.min()) < float(image.max()) <= 1
    assert caption.startswith("this bird Red_Bird_0001_1")
    assert sorted(c for _, c in data.holdout) == ["A blue square.", "A red square.", "Stripes of three colours."]


def test_coco_cub_without_roots_names_the_key_to_set(cub_root):
    with pytest.raises(ConfigError, match=r"data\.roots\.coco is not set.*captions_\{split\}2017\.json"):
        _data(["data=coco_cub", f"data.roots.cub={cub_root}"])


def test_imagefolder_takes_a_root_per_split_or_one_for_all(imagefolder_root, tmp_path):
    data = _data(["data=imagefolder", f"data.roots.imagefolder={imagefolder_root}"])
    assert len(data.owner) == len(data.holdout) == 2
    # without an attacker_holdout folder, a tenth of the attacker's images (at least one) is held out
    assert len(data.attacker) == len(data.attacker_holdout) == 1
    assert data.attacker[0][1] != data.attacker_holdout[0][1] or not torch.equal(data.attacker[0][0],
                                                                              data.attacker_holdout[0][0])
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(DatasetNotFoundError, match=f"{other}.*metadata.jsonl"):  # a split's own root wins over roots.imagefolder
        _data(["data=imagefolder", f"data.roots.imagefolder={imagefolder_root}", f"data.attacker.root={other}"])


def test_micro_run_on_coco_cub(coco_root, cub_root, shared_cache, micro_world, tmp_path):
    shrink = [*SHRINK, "~data.n_owner", "~data.n_attacker", "~data.n_holdout"]  # the micro sizes, not micro data
    data = ["data=coco_cub", f"data.roots.coco={coco_root}", f"data.roots.cub={cub_root}", *FIXTURE_COCO]
    cache = tmp_path / "cache"  # its own cache (other tests count the shared cache's embeddings), the world linked
    assert link_stages(shared_cache, cache, ["world"])
    bench_cli(["method=watermarkdm", "attack=full_ft", "method.steps=20", *shrink, *data, "-m"], tmp_path,
              cache, check=True)
    assert (cache / "world").is_dir() and not any(p.is_dir() and not p.is_symlink() for p in (cache / "world").iterdir())
    (rec,) = records(tmp_path).values()
    m = values(rec)
    assert rec["status"] == "complete" and rec["config"]["data"]["attacker"]["name"] == "cub"
    assert torch.isfinite(torch.tensor(m["fid/watermarked"])) and m["false_positives"] == 0
