"""COCO, CUB and imagefolder loaders on tiny fixtures in their published layouts, and the registry."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from bench.data.base import CaptionedImages, batch_of
from bench.data.coco import load_coco
from bench.data.cub import load_cub
from bench.data.imagefolder import load_imagefolder
from bench.data.loaders import LOADERS, load_dataset
from bench.errors import ConfigError, DatasetNotFoundError
from datafiles import make_cub

RED_T, BLUE_T = torch.tensor([1.0, -1.0, -1.0]), torch.tensor([-1.0, -1.0, 1.0])


def mean_rgb(image: torch.Tensor) -> torch.Tensor:
    return image.mean(dim=(1, 2))


def check_items(ds, resolution: int) -> None:
    for image, caption in ds:
        assert tuple(image.shape) == (3, resolution, resolution) and image.dtype == torch.float32
        assert image.min() >= -1 and image.max() <= 1
        assert isinstance(caption, str) and caption


# --- COCO ---------------------------------------------------------------------------------

def test_coco_items_order_and_first_captions(coco_root):
    ds = load_coco(coco_root, 16)
    check_items(ds, 16)
    assert len(ds) == 3  # image 20 has no caption
    assert ds.captions == ["Stripes of three colours.", "A red square.", "A blue square."]
    stripes, red, blue = (ds[i][0] for i in range(3))
    # The centre crop keeps the red half (as with resize-then-crop, the filter reaches 1 pixel past the edge).
    inner = stripes[:, 1:-1, 1:-1]
    assert torch.allclose(inner, RED_T.view(3, 1, 1).expand_as(inner), atol=0.02)
    assert torch.allclose(mean_rgb(stripes), RED_T, atol=0.05)
    assert torch.allclose(mean_rgb(red), RED_T, atol=0.05)  # JPEG
    assert torch.allclose(blue, BLUE_T.view(3, 1, 1).expand_as(blue), atol=1e-6)


def test_coco_seeded_captions_and_subset(coco_root):
    seeded = load_coco(coco_root, 8, caption_choice="seeded", seed=5)
    assert seeded.captions == load_coco(coco_root, 8, caption_choice="seeded", seed=5).captions
    assert seeded.captions[0].startswith("Stripes") and seeded.captions[1:] == ["A red square.", "A blue square."]
    drawn = {load_coco(coco_root, 8, caption_choice="seeded", seed=s).captions[0] for s in range(20)}
    assert len(drawn) == 3
    small = load_coco(coco_root, 8, max_items=2, seed=1)
    assert len(small) == 2 and set(small.captions) <= set(load_coco(coco_root, 8).captions)
    with pytest.raises(ConfigError, match="caption choice"):
        load_coco(coco_root, 8, caption_choice="longest")


def test_coco_missing_paths(coco_root, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="COCO folder not found") as info:
        load_coco(tmp_path / "nowhere", 8)
    assert "annotations/captions_{split}2017.json" in str(info.value) and "cocodataset.org" in str(info.value)
    with pytest.raises(DatasetNotFoundError, match="captions_train2017.json"):
        load_coco(coco_root, 8, split="train")
    (coco_root / "val2017" / "000000000012.png").unlink()
    with pytest.raises(DatasetNotFoundError, match="000000000012.png"):
        load_coco(coco_root, 8)
    shutil.rmtree(coco_root / "val2017")
    with pytest.raises(DatasetNotFoundError, match="val2017"):
        load_coco(coco_root, 8)
    with pytest.raises(ConfigError, match="test2017 has no captions"):
        load_coco(coco_root, 8, split="test")


def test_coco_rejects_a_foreign_json(coco_root):
    (coco_root / "annotations" / "captions_val2017.json").write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetNotFoundError, match="not a COCO caption file"):
        load_coco(coco_root, 8)


# --- CUB ----------------------------------------------------------------------------------

def test_cub_splits_and_captions(cub_root):
    train, test, every = (load_cub(cub_root, 12, split=s) for s in ("train", "test", "all"))
    check_items(every, 12)
    assert (len(train), len(test), len(every)) == (2, 1, 3)
    assert train.captions == ["this bird Red_Bird_0001_1 is first.", "this bird Blue_Bird_0003_3 is first."]
    assert test.captions == ["this bird Red_Bird_0002_2 is first."]
    assert torch.allclose(mean_rgb(train[0][0]), RED_T, atol=0.05)
    assert torch.allclose(mean_rgb(train[1][0]), BLUE_T, atol=0.05)
    seeded = load_cub(cub_root, 12, split="all", caption_choice="seeded", seed=0)
    assert all(c.startswith("this bird") and c.endswith(("first.", "second.")) for c in seeded.captions)


@pytest.mark.parametrize("text_at", ["text_c10", "CUB_200_2011/text", "CUB_200_2011/text_c10"])
def test_cub_accepts_text_folder_variants(tmp_path, text_at):
    root = make_cub(tmp_path / "cub", text_at=text_at)
    assert len(load_cub(root, 8, split="all")) == 3


def test_cub_root_may_be_the_cub_folder(cub_root):
    shutil.move(str(cub_root / "text"), str(cub_root / "CUB_200_2011" / "text"))
    assert load_cub(cub_root / "CUB_200_2011", 8).captions == load_cub(cub_root, 8).captions


def test_cub_missing_paths(cub_root, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="CUB folder not found"):
        load_cub(tmp_path / "nowhere", 8)
    (cub_root / "text" / "002.Blue_bird" / "Blue_Bird_0003_3.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="Blue_Bird_0003_3.txt is missing"):
        load_cub(cub_root, 8)
    shutil.rmtree(cub_root / "text")
    with pytest.raises(DatasetNotFoundError, match="text descriptions not found") as info:
        load_cub(cub_root, 8)
    assert "text_c10" in str(info.value) and "Reed" in str(info.value)
    (cub_root / "CUB_200_2011" / "train_test_split.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="train_test_split.txt"):
        load_cub(cub_root, 8)
    with pytest.raises(ConfigError, match="split"):
        load_cub(cub_root, 8, split="val")


# --- imagefolder --------------------------------------------------------------------------

def test_imagefolder_items_and_caption_column(imagefolder_root):
    ds = load_imagefolder(imagefolder_root, 20)
    check_items(ds, 20)
    assert ds.captions == ["a red image", "a blue image"]
    assert torch.allclose(mean_rgb(ds[0][0]), RED_T, atol=1e-6)
    assert torch.allclose(mean_rgb(ds[1][0]), BLUE_T, atol=0.05)  # JPEG, 50x20 centre-cropped
    assert load_imagefolder(imagefolder_root, 20, caption_column="caption").captions == ["red", "blue"]
    seeded = {load_imagefolder(imagefolder_root, 4, caption_choice="seeded", seed=s).captions[1] for s in range(20)}
    assert seeded == {"a blue image", "blue again"}


def test_imagefolder_errors(imagefolder_root, tmp_path):
    with pytest.raises(ConfigError, match='no caption column "prompt"'):
        load_imagefolder(imagefolder_root, 8, caption_column="prompt")
    with pytest.raises(DatasetNotFoundError, match="image folder not found"):
        load_imagefolder(tmp_path / "nowhere", 8)
    (imagefolder_root / "sub" / "b.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match="1 of 2 image files are missing"):
        load_imagefolder(imagefolder_root, 8)
    (imagefolder_root / "metadata.jsonl").unlink()
    with pytest.raises(DatasetNotFoundError, match="metadata.jsonl") as info:
        load_imagefolder(imagefolder_root, 8)
    assert "file_name" in str(info.value)


def test_unreadable_image_is_reported_on_access(imagefolder_root):
    ds = load_imagefolder(imagefolder_root, 8)
    (imagefolder_root / "a.png").write_bytes(b"not a png")
    with pytest.raises(DatasetNotFoundError, match="a.png cannot be read"):
        ds[0]


# --- shared pieces ------------------------------------------------------------------------

def test_lazy_datasets_subset_batch_and_load_into_memory(coco_root):
    ds = load_coco(coco_root, 8)
    images, captions = batch_of(ds, [2, 0])
    assert tuple(images.shape) == (2, 3, 8, 8) and captions == [ds.captions[2], ds.captions[0]]
    memory = ds.subset([1, 2]).to_memory()
    assert isinstance(memory, CaptionedImages) and len(memory) == 2
    assert torch.equal(memory[1][0], ds[2][0]) and memory.captions == ds.captions[1:]


def test_registry(imagefolder_root):
    assert set(LOADERS) == {"fashion_mnist", "mnist", "coco", "cub", "imagefolder"}
    assert load_dataset("imagefolder", 8, root=imagefolder_root).captions == ["a red image", "a blue image"]
    with pytest.raises(ConfigError, match="unknown dataset 'laion'"):
        load_dataset("laion", 8)
    with pytest.raises(ConfigError, match="needs option"):
        load_dataset("coco", 8)
    with pytest.raises(ConfigError, match="does not take option"):
        load_dataset("mnist", 8, root=imagefolder_root)
