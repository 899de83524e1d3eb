"""One entry point for every dataset loader, keyed by the name used in configs (`data.name`)."""
from __future__ import annotations

import inspect
from typing import Any, Callable

from torch.utils.data import Dataset

from bench.data.coco import load_coco
from bench.data.cub import load_cub
from bench.data.fashion_mnist import load_fashion_mnist
from bench.data.imagefolder import load_imagefolder
from bench.data.mnist import load_mnist
from bench.errors import ConfigError

LOADERS: dict[str, Callable[..., Dataset]] = {
    "fashion_mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "coco": load_coco,
    "cub": load_cub,
    "imagefolder": load_imagefolder,
}


def load_dataset(name: str, resolution: int, **options: Any) -> Dataset:
    """Return the dataset `name` at `resolution`; `options` go to its loader (root, split, seed, max_items...)."""
    if name not in LOADERS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(LOADERS)}")
    loader = LOADERS[name]
    params = inspect.signature(loader).parameters
    accepted = set(params) - {"resolution"}
    required = [p for p in accepted if params[p].default is inspect.Parameter.empty and p not in options]
    if required:
        raise ConfigError(f"dataset {name!r} needs option(s) {', '.join(sorted(required))} (e.g. data.root)")
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(f"dataset {name!r} does not take option(s) {', '.join(unknown)}; "
                          f"it takes {', '.join(sorted(accepted))}")
    return loader(resolution=resolution, **options)
