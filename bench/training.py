"""The optimisation loop shared by embedding methods and fine-tuning attacks."""
from __future__ import annotations

import logging
from typing import Callable, Iterable

import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


def optimise(params: Iterable[torch.nn.Parameter], loss_fn: Callable[[int], torch.Tensor], steps: int, lr: float,
             desc: str, weight_decay: float = 0.0, grad_clip: float | None = 1.0,
             on_step: Callable[[int], None] | None = None, step_fn: Callable | None = None) -> list[float]:
    """Run `steps` AdamW steps on `loss_fn(step)`; call `on_step(step)` after each. Return the losses.

    `step_fn(step, params, opt)` replaces the default backward/step when a method needs more
    than one gradient per step (RoMa). A progress bar shows the running loss.
    """
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    losses = []
    bar = tqdm(range(1, steps + 1), desc=desc, leave=False, mininterval=1.0)
    for step in bar:
        opt.zero_grad(set_to_none=True)
        if step_fn is not None:
            loss = step_fn(step, params, opt)
        else:
            loss = loss_fn(step)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        if on_step is not None:
            on_step(step)
    bar.close()
    if losses:
        log.info("%s: loss %.4f -> %.4f over %d steps", desc, losses[0], losses[-1], steps)
    return losses
