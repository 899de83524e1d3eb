"""The one dataset interface every loader implements.

A dataset yields `(image, caption)` pairs: `image` is a float tensor of shape (3, H, W) in
[-1, 1] at the world's resolution, `caption` a string. Loaders resize and centre-crop to the
requested resolution themselves so that stages never deal with layouts or formats.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import Dataset


class CaptionedImages(Dataset):
    """In-memory captioned images: the common form for small, offline datasets."""

    def __init__(self, images: torch.Tensor, captions: Sequence[str], name: str = "dataset"):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{name}: expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        if len(images) != len(captions):
            raise ValueError(f"{name}: {len(images)} images but {len(captions)} captions")
        self.images = images.float()
        self.captions = list(captions)
        self.name = name

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        return self.images[i], self.captions[i]

    def subset(self, indices: Sequence[int], name: str | None = None) -> "CaptionedImages":
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return CaptionedImages(self.images[idx], [self.captions[i] for i in idx.tolist()], name or self.name)


def batch_of(dataset: Dataset, indices: Sequence[int]) -> tuple[torch.Tensor, list[str]]:
    """Stack the items at `indices` into (images (B, 3, H, W), captions)."""
    items = [dataset[int(i)] for i in indices]
    return torch.stack([im for im, _ in items]), [c for _, c in items]
