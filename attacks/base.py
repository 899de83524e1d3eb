"""What every attack implements: take a UNet, change its weights, report checkpoints on a schedule.

A checkpoint id is an int (0 = the unattacked input). For training attacks it is the step;
for weight edits (prune, quantize, noise, merge) it is 1..n over the attack's budget values,
and `budget(checkpoint_id)` says what each id means (a sparsity, a format, a noise scale...).

Threat model (Kerckhoffs). An attacker holds the marked model's weights, its own data
(`world.data.attacker`) and, for adaptive attacks, the method's public description, a
`methods.base.MethodCard`: the method's name, how it verifies, the form of its trigger and its
public hyperparameters. It never holds the owner's `Key`: `run` is not given one, and the
harness passes the card only to attacks that declare `uses_card = True` (the card is then part
of the attack's cache address). Every attack's module docstring states what its attacker knows
and which data it uses; the attacker's utility at each checkpoint is measured by
`bench.metrics.utility`. An adaptive attack asks the card whether the method follows a public rule it
exploits (`card.follows("lazy_units")`), never the method's name.

The contract (`Attack`): `run` (abstract), `checkpoints`, `budget`, and the class attributes `name`,
`version`, `budget_label` and `uses_card`; constructors refuse bad parameters with a one-paragraph
ConfigError (`bench.errors.require`). tests/test_contract.py checks every `conf/attack/*.yaml` against it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, ClassVar, Sequence

import torch

from bench.diffusion import unet_state
from bench.errors import require
from methods.base import MethodCard

# The shared checkpoint schedule of every training attack (`schedule: null` in conf/attack/): dense and
# log-spaced, so that a removal in the first optimiser steps is resolved (1, 2, 3, 5, 7, 10, ...)
DEFAULT_SCHEDULE = (0, 1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700, 1000, 1500, 2000, 3000,
                    5000, 7000, 10000, 15000, 20000)


class Attack(ABC):
    """Base class. `run` calls `on_checkpoint(checkpoint_id, unet)` at every id of `self.checkpoints`."""

    name: ClassVar[str] = "base"
    version: ClassVar[str] = "1"
    budget_label: ClassVar[str] = "step"
    uses_card: ClassVar[bool] = False  # True: `run` reads the method's public card (an adaptive attack)

    def __init__(self, steps: int = 0, schedule: Sequence[int] | None = None):
        self.steps = steps
        schedule = DEFAULT_SCHEDULE if schedule is None else tuple(schedule)
        require(all(s >= 0 for s in schedule), f"attack.schedule has a negative step: {list(schedule)}.")
        self.checkpoints = sorted({0, steps} | {s for s in schedule if s <= steps})

    def budget(self, checkpoint_id: int) -> float | str:
        """The attack budget checkpoint `checkpoint_id` was taken at (for training attacks: the step)."""
        return checkpoint_id

    def address_config(self, config: dict) -> dict:
        """What of this attack enters its cache address: its resolved `config`. An attack built from other configs
        (a chain of links) adds what those resolved to, so that a change in them is never served a stale result."""
        return config

    @abstractmethod
    def run(self, world, unet, on_checkpoint: Callable[[int, object], None], card: MethodCard | None = None):
        """Attack `unet` (a trainable copy; modify it in place or return a new one) and return the result.

        `card` is the method's public description (None for attacks with `uses_card = False`)."""


class NoAttack(Attack):
    """The identity: the watermarked model as it is (checkpoint at step 0 only)."""

    name = "none"
    version = "1"

    def __init__(self):
        super().__init__(steps=0, schedule=(0,))

    def run(self, world, unet, on_checkpoint, card=None):
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

    @abstractmethod
    def edit(self, world, unet, value) -> None:
        """Apply the edit at budget `value` to `unet`'s weights in place."""

    @torch.no_grad()
    def run(self, world, unet, on_checkpoint, card=None):
        source = unet_state(unet)
        on_checkpoint(0, unet)
        for checkpoint_id, value in enumerate(self.values, start=1):
            unet.load_state_dict(source)
            self.edit(world, unet, value)
            on_checkpoint(checkpoint_id, unet)
        return unet.requires_grad_(False).eval()
