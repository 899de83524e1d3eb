"""What every attack implements: take a UNet, change its weights, report checkpoints on a schedule.

A checkpoint id is an int (0 = the unattacked input). For training attacks it is the step;
for weight edits (prune, quantize, noise, merge) it is 1..n over the attack's budget values,
and `budget(checkpoint_id)` says what each id means (a sparsity, a format, a noise scale...).
"""
from __future__ import annotations

from typing import Callable, ClassVar, Sequence

import torch

from bench.diffusion import unet_state
from methods.base import require

DEFAULT_SCHEDULE = (0, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)


class Attack:
    """Base class. `run` calls `on_checkpoint(checkpoint_id, unet)` at every id of `self.checkpoints`."""

    name: ClassVar[str] = "base"
    version: ClassVar[str] = "1"
    budget_label: ClassVar[str] = "step"

    def __init__(self, steps: int = 0, schedule: Sequence[int] | None = None):
        self.steps = steps
        schedule = DEFAULT_SCHEDULE if schedule is None else tuple(schedule)
        require(all(s >= 0 for s in schedule), f"attack.schedule has a negative step: {list(schedule)}.")
        self.checkpoints = sorted({0, steps} | {s for s in schedule if s <= steps})

    def budget(self, checkpoint_id: int) -> float | str:
        """The attack budget checkpoint `checkpoint_id` was taken at (for training attacks: the step)."""
        return checkpoint_id

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


class WeightEdit(Attack):
    """An edit of the input weights at each value of a budget list: checkpoint i applies `values[i-1]`.

    Each checkpoint starts again from the input, so the values form a sweep, not a sequence.
    Subclasses set `budget_label` and `unattacked` (the budget of checkpoint 0) and implement `edit`.
    """

    unattacked: ClassVar[float | str] = 0.0

    def __init__(self, values: Sequence, key: str):
        self.values = list(values)
        require(len(self.values) >= 1, f"attack.{key} must list at least one value (got {self.values}).")
        super().__init__(steps=len(self.values), schedule=range(len(self.values) + 1))

    def budget(self, checkpoint_id: int) -> float | str:
        return self.unattacked if checkpoint_id == 0 else self.values[checkpoint_id - 1]

    def edit(self, world, unet, value) -> None:
        """Apply the edit at budget `value` to `unet`'s weights in place."""
        raise NotImplementedError

    @torch.no_grad()
    def run(self, world, unet, on_checkpoint):
        source = unet_state(unet)
        on_checkpoint(0, unet)
        for checkpoint_id, value in enumerate(self.values, start=1):
            unet.load_state_dict(source)
            self.edit(world, unet, value)
            on_checkpoint(checkpoint_id, unet)
        return unet.requires_grad_(False).eval()
