"""MS-COCO 2017 captions (Chen et al., 2015) from a user's folder in the published layout.

    <root>/annotations/captions_{split}2017.json   (from annotations_trainval2017.zip)
    <root>/{split}2017/<12-digit id>.jpg           (from {split}2017.zip)

`split` is "train" or "val" (test2017 has no captions). Images load lazily on access.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from bench.data.common import ImageFiles, check_resolution, choose_captions, require, subset_indices
from bench.errors import ConfigError, DatasetNotFoundError

LAYOUT = "<root>/annotations/captions_{split}2017.json and <root>/{split}2017/*.jpg"
FIX = ("download and unzip annotations_trainval2017.zip and {split}2017.zip from cocodataset.org into one "
       "folder and point data.root at it")


def load_coco(root: Path | str, resolution: int, split: str = "val", seed: int = 0, max_items: int | None = None,
              caption_choice: str = "first") -> ImageFiles:
    """Return COCO-2017 as a lazy dataset: one item per captioned image, (image (3, r, r) in [-1, 1], caption).

    Images are ordered by id. caption_choice "first" takes the caption with the lowest annotation id,
    "seeded" draws one per image with `seed`. `max_items` keeps a seeded random subset of images.
    """
    if split not in ("train", "val"):
        raise ConfigError(f"COCO split must be 'train' or 'val' (test2017 has no captions), got {split!r}")
    resolution = check_resolution(resolution)
    root = Path(root)
    fix = FIX.format(split=split)
    require(root, "COCO folder", LAYOUT, fix)
    ann_path = require(root / "annotations" / f"captions_{split}2017.json", "COCO caption file", LAYOUT, fix)
    image_dir = require(root / f"{split}2017", "COCO image folder", LAYOUT, fix)
    try:
        with open(ann_path, encoding="utf-8") as f:
            coco = json.load(f)
        files = {image["id"]: image["file_name"] for image in coco["images"]}
        by_image: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for ann in coco["annotations"]:
            by_image[ann["image_id"]].append((ann["id"], ann["caption"].strip()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DatasetNotFoundError(f"{ann_path} is not a COCO caption file ({type(e).__name__}: {e}). "
                                   f"Fix: {fix}") from None
    missing = sorted(set(by_image) - set(files))
    if missing:
        raise DatasetNotFoundError(f"{ann_path}: captions refer to image ids absent from its 'images' list "
                                   f"(e.g. {missing[0]}). Fix: {fix}")
    ids = sorted(by_image)
    options = [[caption for _, caption in sorted(by_image[i])] for i in ids]
    captions = choose_captions(options, caption_choice, seed)
    keep = subset_indices(len(ids), max_items, seed)
    return ImageFiles([image_dir / files[ids[k]] for k in keep], [captions[k] for k in keep], resolution,
                      name=f"coco-{split}2017", fix=fix)
