"""Tiny dataset fixtures in the published layouts, written into tmp_path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datafiles import BLUE, GREEN, RED, make_cub, solid_image, striped_image, write_idx


@pytest.fixture
def fashion_root(tmp_path: Path) -> Path:
    """Fashion-MNIST layout: train has 6 images (constant value 40*k, label k), t10k has 3 (label 9 - k)."""
    root = tmp_path / "fashion"
    root.mkdir()
    train = np.stack([np.full((28, 28), 40 * k) for k in range(6)])
    write_idx(root / "train-images-idx3-ubyte.gz", train)
    write_idx(root / "train-labels-idx1-ubyte.gz", np.arange(6))
    test = np.stack([np.full((28, 28), 255 - 10 * k) for k in range(3)])
    write_idx(root / "t10k-images-idx3-ubyte.gz", test)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", 9 - np.arange(3))
    return root


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    """COCO-2017 layout, val split: 3 captioned images (ids 7, 3, 12), one image without captions."""
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    striped_image().save(root / "val2017" / "000000000003.png")
    solid_image(RED).save(root / "val2017" / "000000000007.jpg", quality=95)
    solid_image(BLUE, (30, 30)).save(root / "val2017" / "000000000012.png")
    solid_image(GREEN).save(root / "val2017" / "000000000020.png")
    images = [{"id": i, "file_name": f} for i, f in
              [(7, "000000000007.jpg"), (3, "000000000003.png"), (12, "000000000012.png"), (20, "000000000020.png")]]
    annotations = [
        {"id": 105, "image_id": 7, "caption": "A red square. "},
        {"id": 101, "image_id": 3, "caption": "Stripes, second caption by id."},
        {"id": 100, "image_id": 3, "caption": "Stripes of three colours."},
        {"id": 102, "image_id": 3, "caption": "Stripes, third caption."},
        {"id": 110, "image_id": 12, "caption": "A blue square."},
    ]
    (root / "annotations" / "captions_val2017.json").write_text(
        json.dumps({"info": {}, "images": images, "annotations": annotations}))
    return root


@pytest.fixture
def cub_root(tmp_path: Path) -> Path:
    return make_cub(tmp_path / "cub")


@pytest.fixture
def imagefolder_root(tmp_path: Path) -> Path:
    """imagefolder layout: metadata.jsonl with a nested path, a string caption and a list caption."""
    root = tmp_path / "folder"
    (root / "sub").mkdir(parents=True)
    solid_image(RED).save(root / "a.png")
    solid_image(BLUE, (50, 20)).save(root / "sub" / "b.jpg", quality=95)
    rows = [{"file_name": "a.png", "text": "a red image", "caption": "red"},
            {"file_name": "sub/b.jpg", "text": ["a blue image", "blue again"], "caption": "blue"}]
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    return root
