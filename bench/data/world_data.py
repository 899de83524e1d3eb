"""The three datasets a world carries: the owner's clean data, the attacker's data, held-out data."""
from __future__ import annotations

import inspect
from dataclasses import dataclass

from torch.utils.data import Dataset

from bench.data.loaders import LOADERS, load_dataset
from bench.errors import ConfigError


@dataclass
class WorldData:
    """owner: what the owner trains on while embedding; attacker: what fine-tuning attacks use;
    holdout: clean data never trained on (FID reference, CLIP-score prompts, task loss)."""

    owner: Dataset
    attacker: Dataset
    holdout: Dataset

    def prompts(self, n: int) -> list[str]:
        """The first `n` held-out captions (cycled if there are fewer): the evaluation prompts."""
        return [self.holdout[i % len(self.holdout)][1] for i in range(n)]


def from_sources(resolution: int, owner: dict, attacker: dict, holdout: dict, roots: dict | None = None,
                 seed: int = 0) -> WorldData:
    """A WorldData whose three splits come from the dataset loaders (`bench.data.loaders`).

    Each split is a loader spec, `{name: coco, split: train, max_items: 10000, ...}`; its folder is
    the spec's own `root` or else `roots[name]`, so one `data.roots.coco=/data/coco` serves every split
    read from COCO. Every split is loaded (and so checked) before any work starts.
    """
    roots = roots or {}
    splits = {}
    for role, spec in (("owner", owner), ("attacker", attacker), ("holdout", holdout)):
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
        splits[role] = load_dataset(name, resolution, **spec)
    return WorldData(**splits)
