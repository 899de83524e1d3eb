"""The optimisation loop shared by embedding methods and fine-tuning attacks."""
from __future__ import annotations

import importlib.util
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from diffusers.optimization import SchedulerType, get_scheduler
from tqdm.auto import tqdm

from bench.errors import ConfigError

log = logging.getLogger(__name__)
LR_SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine")  # diffusers' train_text_to_image choices
TRAIN_PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
OPTIMIZERS = ("adamw", "adamw8bit")


def check_training(precision: str, optimizer: str = "adamw", device: str | torch.device | None = None) -> None:
    """Refuse a training precision or optimiser this harness cannot run (on `device`, when given)."""
    if precision not in TRAIN_PRECISIONS:
        raise ConfigError(f"model.train_precision must be one of {list(TRAIN_PRECISIONS)} (got {precision!r}): fp32 "
                          "trains in full precision (the default, bit-identical to earlier results), bf16 / fp16 run "
                          "the forward pass and loss under torch.autocast with fp32 master weights.")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"model.optimizer must be one of {list(OPTIMIZERS)} (got {optimizer!r}); adamw8bit is "
                          "bitsandbytes' AdamW8bit (pip install bitsandbytes).")
    if optimizer == "adamw8bit" and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("model.optimizer=adamw8bit needs bitsandbytes, which is not installed (it is optional, not a "
                          "dependency of the harness). Install it into the environment (pip install bitsandbytes) "
                          "or use model.optimizer=adamw.")
    if precision == "fp16" and device is not None and torch.device(device).type == "cpu":
        raise ConfigError("model.train_precision=fp16 was requested on the CPU: fp16 autocast with a gradient scaler is "
                          "a GPU setting (on the CPU it is unsupported for many kernels and far slower than fp32). Use "
                          "model.train_precision=bf16 for mixed precision on the CPU, or run on a CUDA device "
                          "(device=auto on a GPU node, e.g. hydra/launcher=slurm).")


@dataclass(frozen=True)
class TrainSettings:
    """A world's training settings (model.train_precision, model.gradient_checkpointing, model.optimizer):
    every embedding and attack loop in that world runs with them."""

    precision: str = "fp32"
    gradient_checkpointing: bool = False
    optimizer: str = "adamw"


class Amp:
    """How a training loop runs: autocast dtype, gradient scaling and which AdamW.

    `fp32` (the default) is the plain loop: no autocast context, no scaler, torch's AdamW, so
    results are bit-identical to a loop without this object. `bf16` / `fp16` wrap forward + loss
    in `torch.autocast(device_type, dtype)`; the trainable weights (and so the optimiser state)
    stay fp32 (`World.fresh_unet`). `fp16` adds a `torch.amp.GradScaler`: the loss is scaled for
    backward and gradients are unscaled before clipping; steps with inf/nan gradients are skipped.
    `optimizer="adamw8bit"`: bitsandbytes' 8-bit AdamW (optimiser state in 8 bits).
    """

    def __init__(self, precision: str = "fp32", device_type: str = "cpu", optimizer: str = "adamw"):
        check_training(precision, optimizer)
        self.precision, self.device_type, self.optimizer_name = precision, device_type, optimizer
        self.dtype = TRAIN_PRECISIONS[precision]
        self.scaler = torch.amp.GradScaler(device_type) if precision == "fp16" else None

    @classmethod
    def of(cls, world) -> "Amp":
        """The settings of `world` (model.train_precision, model.optimizer) on its device."""
        return cls(world.training.precision, world.device.type, world.training.optimizer)

    def autocast(self):
        """The context for forward + loss: nothing in fp32, torch.autocast otherwise."""
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def make_optimizer(self, params, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
        """AdamW (torch) or AdamW8bit (bitsandbytes) over `params` (a list of tensors or of param groups)."""
        if self.optimizer_name == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        try:
            from bitsandbytes.optim import AdamW8bit
        except ImportError as err:
            raise ConfigError(f"model.optimizer=adamw8bit needs bitsandbytes, which does not import here ({err}). "
                              "Install it (pip install bitsandbytes) or use model.optimizer=adamw.") from err
        return AdamW8bit(params, lr=lr, weight_decay=weight_decay)

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def grad(self, loss: torch.Tensor, params) -> tuple[torch.Tensor, ...]:
        """`torch.autograd.grad(loss, params)`, scaled like `backward` (so `step` unscales it)."""
        return torch.autograd.grad(loss if self.scaler is None else self.scaler.scale(loss), params)

    def step(self, opt: torch.optim.Optimizer, params, grad_clip: float | None) -> None:
        """Clip the gradients at `grad_clip` (after unscaling them) and take the optimiser step."""
        if self.scaler is not None:
            self.scaler.unscale_(opt)
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        if self.scaler is None:
            opt.step()
        else:
            self.scaler.step(opt)
            self.scaler.update()


def check_lr_schedule(name: str, warmup_steps: int, steps: int, prefix: str = "attack") -> None:
    """Refuse an unknown learning-rate schedule or a warm-up it would silently ignore."""
    if name not in LR_SCHEDULES:
        raise ConfigError(f"{prefix}.lr_scheduler must be one of {list(LR_SCHEDULES)} (diffusers' schedules, as in its "
                          f"train_text_to_image example), got {name!r}.")
    if not isinstance(warmup_steps, int) or not 0 <= warmup_steps <= steps:
        raise ConfigError(f"{prefix}.lr_warmup_steps must be an integer in [0, steps={steps}] (got {warmup_steps!r}).")
    if name == "constant" and warmup_steps > 0:
        raise ConfigError(f"{prefix}.lr_scheduler=constant ignores {prefix}.lr_warmup_steps={warmup_steps} (as diffusers' "
                          f"get_scheduler does); use {prefix}.lr_scheduler=constant_with_warmup for a warm-up.")


def optimise(params: Iterable[torch.nn.Parameter], loss_fn: Callable[[int], torch.Tensor], steps: int, lr: float,
             desc: str, weight_decay: float = 0.0, grad_clip: float | None = 1.0,
             on_step: Callable[[int], None] | None = None, step_fn: Callable | None = None,
             lr_scheduler: str = "constant", warmup_steps: int = 0, amp: Amp | None = None) -> list[float]:
    """Run `steps` AdamW steps on `loss_fn(step)`; call `on_step(step)` after each. Return the losses.

    `step_fn(step, params, opt)` replaces the default backward/step when a method needs more
    than one gradient per step (RoMa); it uses the same `amp` for autocast and stepping.
    `lr_scheduler` / `warmup_steps`: a diffusers schedule, stepped after every optimiser step (the
    default, constant, leaves lr exactly as given). `amp` (`Amp.of(world)`): mixed precision and
    the optimiser; None is fp32 with torch's AdamW. A progress bar shows the running loss.
    """
    amp = amp or Amp()
    params = [p for p in params if p.requires_grad]
    opt = amp.make_optimizer(params, lr, weight_decay)
    schedule = None if lr_scheduler == "constant" else get_scheduler(
        SchedulerType(lr_scheduler), opt, num_warmup_steps=warmup_steps, num_training_steps=steps)
    losses = []
    bar = tqdm(range(1, steps + 1), desc=desc, leave=False, mininterval=1.0)
    for step in bar:
        opt.zero_grad(set_to_none=True)
        if step_fn is not None:
            loss = step_fn(step, params, opt)
        else:
            with amp.autocast():
                loss = loss_fn(step)
            amp.backward(loss)
            amp.step(opt, params, grad_clip)
        if schedule is not None:
            schedule.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        if on_step is not None:
            on_step(step)
    bar.close()
    if losses:
        log.info("%s: loss %.4f -> %.4f over %d steps", desc, losses[0], losses[-1], steps)
    return losses
