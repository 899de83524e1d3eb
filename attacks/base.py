"""What every attack implements: take a UNet, change its weights, report checkpoints on a schedule."""
from __future__ import annotations

from typing import Callable, ClassVar, Sequence

from methods.base import require

DEFAULT_SCHEDULE = (0, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)


class Attack:
    """Base class. `run` calls `on_checkpoint(step, unet)` at every step of `self.checkpoints`."""

    name: ClassVar[str] = "base"
    version: ClassVar[str] = "1"

    def __init__(self, steps: int = 0, schedule: Sequence[int] | None = None):
        self.steps = steps
        schedule = DEFAULT_SCHEDULE if schedule is None else tuple(schedule)
        require(all(s >= 0 for s in schedule), f"attack.schedule has a negative step: {list(schedule)}.")
        self.checkpoints = sorted({s for s in schedule if s <= steps} | {steps})

    def run(self, world, unet, on_checkpoint: Callable[[int, object], None]):
        """Attack `unet` (a trainable copy; modify it in place or return a new one) and return the result."""
        raise NotImplementedError


class NoAttack(Attack):
    """The identity: the watermarked model as it is (checkpoint at step 0 only)."""

    name = "none"

    def __init__(self):
        super().__init__(steps=0, schedule=(0,))

    def run(self, world, unet, on_checkpoint):
        on_checkpoint(0, unet)
        return unet
