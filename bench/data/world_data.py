"""The three datasets a world carries: the owner's clean data, the attacker's data, held-out data."""
from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset


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
