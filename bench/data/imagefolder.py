"""A folder of images with captions in `metadata.jsonl` (the diffusers / HF datasets "imagefolder" layout).

    <root>/metadata.jsonl     one JSON object per line: {"file_name": "a/b.png", "text": "a caption"}
    <root>/a/b.png            paths in file_name are relative to <root>

The caption column is configurable (default "text"); its value is a string or a list of strings.
For the split layout of HF datasets (<root>/train/metadata.jsonl) point root at <root>/train.
"""
from __future__ import annotations

import json
from pathlib import Path

from bench.data.common import ImageFiles, check_resolution, choose_captions, require, subset_indices
from bench.errors import ConfigError, DatasetNotFoundError

LAYOUT = '<root>/metadata.jsonl with lines {"file_name": "<path relative to root>", "<caption column>": "..."}'
FIX = "point data.root at a folder holding metadata.jsonl and the images it names"


def _caption_options(value: object, where: str) -> list[str]:
    options = [value] if isinstance(value, str) else value
    if not isinstance(options, list) or not options or not all(isinstance(c, str) for c in options):
        raise DatasetNotFoundError(f"{where}: the caption must be a string or a non-empty list of strings, "
                                   f"got {value!r}. Fix: {FIX}")
    return [c.strip() for c in options]


def load_imagefolder(root: Path | str, resolution: int, caption_column: str = "text", seed: int = 0,
                     max_items: int | None = None, caption_choice: str = "first") -> ImageFiles:
    """Return the folder as a lazy dataset: one item per metadata line, (image (3, r, r) in [-1, 1], caption).

    Items follow metadata.jsonl. For list-valued captions, caption_choice "first" takes the first and
    "seeded" draws one with `seed`; `max_items` keeps a seeded random subset.
    """
    resolution = check_resolution(resolution)
    root = Path(root)
    require(root, "image folder", LAYOUT, FIX)
    meta = require(root / "metadata.jsonl", "metadata file", LAYOUT, FIX)
    files, options = [], []
    for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{meta}, line {n}"
        try:
            row = json.loads(line)
        except ValueError as e:
            raise DatasetNotFoundError(f"{where} is not valid JSON ({e}). Fix: {FIX}") from None
        if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
            raise DatasetNotFoundError(f'{where} has no "file_name" string. Expected layout: {LAYOUT}. Fix: {FIX}')
        if caption_column not in row:
            raise ConfigError(f'{where} has no caption column "{caption_column}" (columns: {", ".join(row)}). '
                              "Set data.caption_column to the column holding the captions")
        files.append(row["file_name"])
        options.append(_caption_options(row[caption_column], where))
    if not files:
        raise DatasetNotFoundError(f"{meta} lists no images. Expected layout: {LAYOUT}. Fix: {FIX}")
    captions = choose_captions(options, caption_choice, seed)
    keep = subset_indices(len(files), max_items, seed)
    return ImageFiles([root / files[k] for k in keep], [captions[k] for k in keep], resolution,
                      name=f"imagefolder-{root.name}", fix=FIX)
