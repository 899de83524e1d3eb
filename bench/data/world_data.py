"""The three datasets a world carries: the owner's clean data, the attacker's data, held-out data."""
from __future__ import annotations

import inspect
from dataclasses import dataclass

from torch.utils.data import Dataset, Subset

from bench.data.common import subset_indices
from bench.data.loaders import LOADERS, load_dataset
from bench.errors import ConfigError


@dataclass
class WorldData:
    """owner: what the owner trains on while embedding; attacker: what fine-tuning attacks use;
    holdout: clean owner-domain data never trained on (FID reference, CLIP-score prompts, task loss);
    attacker_holdout: attacker-domain data no attack trains on (the attacker's gain, `bench.metrics.utility`)."""

    owner: Dataset
    attacker: Dataset
    holdout: Dataset
    attacker_holdout: Dataset

    def prompts(self, n: int) -> list[str]:
        """The first `n` held-out captions (cycled if there are fewer): the evaluation prompts."""
        return [self.holdout[i % len(self.holdout)][1] for i in range(n)]


def disjoint(pool: Dataset, n_train: int | None, n_holdout: int, seed: int) -> tuple[Dataset, Dataset]:
    """(train, held out): `n_train` items of `pool` drawn with `seed` (the same draw a loader's
    `max_items` makes) and `n_holdout` others drawn from the rest. With `n_train` None, at most a tenth
    of the pool (and at most `n_holdout` items) is held out and the rest is trained on."""
    if n_train is None:
        n_train = len(pool) - min(n_holdout, max(1, len(pool) // 10))
    train = subset_indices(len(pool), n_train, seed)
    rest = sorted(set(range(len(pool))) - set(train))
    if not rest:
        raise ConfigError(f"no attacker data is left for the attacker's hold-out ({len(pool)} items, {len(train)} "
                          "trained on): lower the attacker's max_items or give an attacker_holdout split.")
    held = [rest[i] for i in subset_indices(len(rest), n_holdout, seed + 1)]
    return _subset(pool, train), _subset(pool, held)


def _subset(dataset: Dataset, indices: list[int]) -> Dataset:
    return dataset.subset(indices) if hasattr(dataset, "subset") else Subset(dataset, indices)


def from_sources(resolution: int, owner: dict, attacker: dict, holdout: dict, attacker_holdout: dict | None = None,
                 roots: dict | None = None, seed: int = 0, n_attacker_holdout: int = 500) -> WorldData:
    """A WorldData whose splits come from the dataset loaders (`bench.data.loaders`).

    Each split is a loader spec, `{name: coco, split: train, max_items: 10000, ...}`; its folder is
    the spec's own `root` or else `roots[name]`, so one `data.roots.coco=/data/coco` serves every split
    read from COCO. Every split is loaded (and so checked) before any work starts. Without an
    `attacker_holdout` spec, `n_attacker_holdout` items of the attacker's source that it does not
    train on are held out (the attacker split is then read in full and `max_items` drawn from it).
    """
    roots = roots or {}
    splits = {}
    carve = attacker_holdout is None
    specs = [("owner", owner), ("attacker", attacker), ("holdout", holdout)]
    if not carve:
        specs.append(("attacker_holdout", attacker_holdout))
    for role, spec in specs:
        spec = dict(spec)
        name = spec.pop("name", None)
        if name not in LOADERS:
            raise ConfigError(f"data.{role}.name must name a dataset loader ({', '.join(LOADERS)}), got {name!r}.")
        spec.setdefault("seed", seed)
        if spec.get("root") is None and "root" in inspect.signature(LOADERS[name]).parameters:
            if roots.get(name) is None:
                layout = getattr(inspect.getmodule(LOADERS[name]), "LAYOUT", "its published layout")
                raise ConfigError(f"data.roots.{name} is not set: the {role} data is read from {name}, which must be "
                                  f"a folder of yours laid out as {layout}. Point the config at it, e.g. "
                                  f"data.roots.{name}=/data/{name} (or data.{role}.root=... for this split alone).")
            spec["root"] = roots[name]
        if role == "attacker" and carve:
            n_train = spec.pop("max_items", None)
            splits["attacker"], splits["attacker_holdout"] = disjoint(load_dataset(name, resolution, **spec), n_train,
                                                                      n_attacker_holdout, spec["seed"])
        else:
            splits[role] = load_dataset(name, resolution, **spec)
    return WorldData(**splits)
