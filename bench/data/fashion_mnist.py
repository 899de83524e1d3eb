"""Fashion-MNIST (Xiao et al., 2017) from its IDX files, with captions made from class names.

Default folder: /usr/share/datasets/fashion-mnist/ from the Debian package
`dataset-fashion-mnist`. Any folder holding the four published files works:
train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,
t10k-labels-idx1-ubyte.gz (uncompressed copies without `.gz` are accepted too).
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from bench.data.base import CaptionedImages
from bench.data.common import check_resolution, class_captions, gray_to_rgb, subset_indices
from bench.errors import ConfigError, DatasetNotFoundError

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
SPLIT_PREFIX = {"train": "train", "test": "t10k"}
CLASS_PHRASES = ("a t-shirt", "a pair of trousers", "a pullover", "a dress", "a coat",
                 "a sandal", "a shirt", "a sneaker", "a bag", "an ankle boot")
TEMPLATES = ("a photo of {}", "a picture of {}", "an image of {}", "a black and white photo of {}",
             "a product photo of {}")
FIX = ("apt-get install -y dataset-fashion-mnist (files land in /usr/share/datasets/fashion-mnist/), "
       "or point data.root at a folder holding the IDX files")
LAYOUT = ("<root>/{train,t10k}-images-idx3-ubyte.gz and <root>/{train,t10k}-labels-idx1-ubyte.gz "
          "(the files published by Zalando Research)")


def read_idx(path: Path) -> np.ndarray:
    """Return the uint8 array stored in an IDX file (gzip-compressed if the name ends in .gz)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DatasetNotFoundError(f"cannot read IDX file {path} ({e}). Fix: {FIX}") from None
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise DatasetNotFoundError(f"{path} is not an unsigned-byte IDX file (bad magic number). Fix: {FIX}")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header])
    array = np.frombuffer(data, dtype=np.uint8, offset=header)
    if array.size != int(np.prod(dims)):
        raise DatasetNotFoundError(f"{path} is truncated: header says {dims}, found {array.size} values. Fix: {FIX}")
    return array.reshape(dims)


def _find(root: Path, name: str) -> Path:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    raise DatasetNotFoundError(f"Fashion-MNIST file {root / name}.gz not found. Expected layout: {LAYOUT}. Fix: {FIX}")


def read_fashion_mnist(root: Path | str | None = None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 (N, 28, 28), labels int64 (N,)) of one split ('train' or 'test')."""
    if split not in SPLIT_PREFIX:
        raise ConfigError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
    root = Path(root) if root is not None else DEFAULT_ROOT
    if not root.is_dir():
        raise DatasetNotFoundError(f"Fashion-MNIST folder {root} does not exist. Expected layout: {LAYOUT}. Fix: {FIX}")
    prefix = SPLIT_PREFIX[split]
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetNotFoundError(f"Fashion-MNIST {split} files in {root} disagree: images {images.shape}, "
                                   f"labels {labels.shape}. Fix: {FIX}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASS_PHRASES)):
        raise DatasetNotFoundError(f"Fashion-MNIST labels in {root} fall outside 0..9. Fix: {FIX}")
    return images, labels


def load_fashion_mnist(resolution: int, split: str = "train", root: Path | str | None = None, seed: int = 0,
                       max_items: int | None = None, fit: str = "resize") -> CaptionedImages:
    """Return Fashion-MNIST as CaptionedImages: RGB (N, 3, r, r) in [-1, 1], captions like "a photo of a sneaker".

    Templates are drawn per item with `seed`; `max_items` keeps a seeded random subset (captions do
    not depend on it). fit="resize" resizes the 28x28 images, fit="pad" centres them on black.
    """
    resolution = check_resolution(resolution)
    images, labels = read_fashion_mnist(root, split)
    captions = class_captions(labels, CLASS_PHRASES, TEMPLATES, seed)
    keep = subset_indices(len(labels), max_items, seed)
    return CaptionedImages(gray_to_rgb(images[keep], resolution, fit), [captions[i] for i in keep],
                           name=f"fashion_mnist-{split}")
