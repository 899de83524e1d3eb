"""Function-preserving permutation of hidden units: the same network, its units at other coordinates.

Threat model: the attacker knows the method, and white-box verifiers (AIAO, ActiveMark) read the
UNet's internal features at fixed coordinates (a unit's output channels, a transformer block's
feature dimensions). The attacker has no data, does no training and never sees the key: it
permutes hidden units consistently, so the network computes exactly the same function (up to
float rounding) and the attacker's utility is unchanged by construction, while the coordinates a
verifier reads now hold other units.

Kinds (one checkpoint each):
* `transformer`: each Transformer2DModel's inner width (proj_in .. blocks .. proj_out);
* `residual`: the residual stream's channels through the whole UNet (conv_in .. conv_out), within
  the constraints of every GroupNorm that reads them (see `grouped_permutation`);
* `resnet_inner`, `heads`, `ff_hidden`: units whose permutation leaves every unit's and block's
  output coordinates as they are (a resnet's inner channels, attention heads, GEGLU hidden units);
* `all`: all of the above.

The groups and how each is permuted live in `bench.permutation`, which the owner's aligned
verification (`metrics.verification.align=activations`) uses to undo a permutation.
"""
from __future__ import annotations

from attacks.base import WeightEdit
from bench.diffusion import generator
from bench.errors import require
from bench.permutation import CHEAP, PARTS, permute_randomly

__all__ = ["Permute", "CHEAP", "PARTS"]


class Permute(WeightEdit):
    """One checkpoint per kind of permutation (`transformer`, `residual`, `all`, or a cheap kind alone)."""

    name = "permute"
    version = "1"
    budget_label = "permutation"
    unattacked = "none"

    def __init__(self, kinds=("transformer", "residual", "all"), seed: int = 0):
        kinds = list(kinds)
        bad = [k for k in kinds if not (isinstance(k, str) and k in PARTS)]
        require(not bad, f"attack.kinds has unknown kinds {bad}; choose from {list(PARTS)} (all = transformer + "
                         f"residual + {' + '.join(CHEAP)}).")
        super().__init__(kinds, "kinds")
        self.seed = seed

    def edit(self, world, unet, value) -> None:
        permute_randomly(unet, value, generator(self.seed, self.name, value))
