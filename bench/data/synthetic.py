"""Synthetic captioned shapes for the micro world: made in code, in milliseconds, from a seed."""
from __future__ import annotations

import torch

from bench.data.base import CaptionedImages
from bench.data.world_data import WorldData
from bench.diffusion import generator

COLORS = {"red": (1.0, -0.8, -0.8), "green": (-0.8, 1.0, -0.8), "blue": (-0.8, -0.8, 1.0),
          "yellow": (1.0, 1.0, -0.8), "white": (1.0, 1.0, 1.0)}
SHAPES = ("square", "circle", "bar")


def _shape_mask(shape: str, resolution: int, cx: float, cy: float, size: float) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.linspace(0, 1, resolution), torch.linspace(0, 1, resolution), indexing="ij")
    if shape == "square":
        return ((xs - cx).abs() < size) & ((ys - cy).abs() < size)
    if shape == "circle":
        return (xs - cx) ** 2 + (ys - cy) ** 2 < size ** 2
    return ((xs - cx).abs() < size * 0.4) & ((ys - cy).abs() < size * 1.6)


def shapes(n: int, resolution: int, seed: int, name: str, shapes_: tuple[str, ...] = SHAPES) -> CaptionedImages:
    """`n` images of one coloured shape on a dark background, captioned "a red circle" etc."""
    gen = generator(seed, name)
    images, captions = [], []
    colors = list(COLORS)
    for _ in range(n):
        shape = shapes_[int(torch.randint(len(shapes_), (1,), generator=gen))]
        color = colors[int(torch.randint(len(colors), (1,), generator=gen))]
        cx, cy = (0.3 + 0.4 * torch.rand(2, generator=gen)).tolist()
        size = 0.15 + 0.1 * float(torch.rand(1, generator=gen))
        img = torch.full((3, resolution, resolution), -0.9)
        mask = _shape_mask(shape, resolution, cx, cy, size)
        img[:, mask] = torch.tensor(COLORS[color])[:, None]
        images.append(img)
        captions.append(f"a {color} {shape}")
    return CaptionedImages(torch.stack(images), captions, name)


def micro_data(resolution: int = 32, n_owner: int = 256, n_attacker: int = 256, n_holdout: int = 64,
               n_attacker_holdout: int = 64, seed: int = 0) -> WorldData:
    """Owner data: all shapes; attacker data: squares and bars from another seed (and as many again,
    drawn apart, held out); hold-out: all shapes."""
    return WorldData(owner=shapes(n_owner, resolution, seed, "owner"),
                     attacker=shapes(n_attacker, resolution, seed, "attacker", ("square", "bar")),
                     holdout=shapes(n_holdout, resolution, seed, "holdout"),
                     attacker_holdout=shapes(n_attacker_holdout, resolution, seed, "attacker-holdout",
                                             ("square", "bar")))
