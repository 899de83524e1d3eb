"""RoMa (Xie et al., NeurIPS 2025): a trigger backdoor embedded in a flat region along the path
that fine-tuning takes back towards the pre-trained model.

* Embedding functionality: the WatermarkDM trigger loss (`methods.watermarkdm`, the same bit-grid
  target and prior-preservation term), without the L1 weight penalty (RoMa drops it).
* Path-specific smoothness: every step takes g1 = grad L(theta) and g2 = grad L(theta~) at
  theta~ = theta + r * d / ||d||, with d = theta_0 - theta (towards the pre-trained weights, the
  paper's Algorithm 1), and updates with g = (1 - alpha) g1 + alpha g2. Both gradients use the
  same batch, so g2 - g1 measures the loss's curvature along d alone.

Choices where the public material is silent (docs/methods.md):
* `normalize`: `global` divides d by its norm over the whole UNet (one step of length r in
  weight space, default); `per_tensor` gives every tensor its own step of length r.
* At step 1, theta = theta_0 so d = 0: theta~ = theta (no perturbation) until the weights move.
* `direction: none` reproduces the released code, whose d is computed before any update and is
  therefore always 0; its two gradients come from two independent batches (`same_batch: false`),
  so the "smoothness" step is the average of two stochastic gradients.
"""
from __future__ import annotations

import torch

from bench.errors import require
from bench.training import Amp
from methods.watermarkdm import TriggerBackdoor


def perturbation(params: list[torch.Tensor], theta0: list[torch.Tensor], r: float,
                 normalize: str) -> list[torch.Tensor]:
    """r * d / ||d|| with d = theta0 - params, normalised globally or per tensor (zeros where d = 0)."""
    d = [p0 - p.detach() for p, p0 in zip(params, theta0)]
    if normalize == "global":
        norm = torch.sqrt(sum((x.float() ** 2).sum() for x in d))
        return [x * (r / norm) if norm > 0 else torch.zeros_like(x) for x in d]
    out = []
    for x in d:
        norm = x.float().norm()
        out.append(x * (r / norm) if norm > 0 else torch.zeros_like(x))
    return out


class RoMa(TriggerBackdoor):
    """WatermarkDM's trigger loss + path-specific smoothness (two gradients per step)."""

    name = "roma"
    version = "2"  # 2: WatermarkDM's one-pass trigger + clean batch

    def __init__(self, r: float = 0.05, alpha: float = 0.4, direction: str = "pretrained", normalize: str = "global",
                 same_batch: bool = True, grad_clip: float = 1.0, **trigger):
        trigger.setdefault("l1", 0.0)
        super().__init__(**trigger)
        require(r >= 0, f"method.r must be non-negative (got {r}); the paper uses r = 0.05.")
        require(0 <= alpha <= 1, f"method.alpha must be in [0, 1] (got {alpha}); the paper uses alpha = 0.4.")
        require(direction in ("pretrained", "none"),
                f"method.direction must be 'pretrained' (the paper) or 'none' (the released code), got {direction!r}.")
        require(normalize in ("global", "per_tensor"),
                f"method.normalize must be 'global' or 'per_tensor' (got {normalize!r}).")
        require(grad_clip > 0, f"method.grad_clip must be positive (got {grad_clip}).")
        require(not (direction == "none" and same_batch),
                "method.direction=none with method.same_batch=true takes the second gradient at the same point, on "
                "the same batch, noise and timesteps as the first: g2 = g1, which is plain trigger training, not the "
                "released code's behaviour (its two gradients use fresh noise and timesteps). Reproduce the released "
                "code with method.direction=none method.same_batch=false.")
        self.r, self.alpha, self.direction, self.normalize = r, alpha, direction, normalize
        self.same_batch, self.grad_clip = same_batch, grad_clip

    def _step_fn(self, unet, theta0, draw, loss, amp: Amp | None = None):
        amp = amp or Amp()  # fp32 unless the embedding passes the world's

        def step(_step: int, params: list[torch.nn.Parameter], opt: torch.optim.Optimizer) -> torch.Tensor:
            batch = draw()
            with amp.autocast():
                l1 = loss(batch)
            g1 = amp.grad(l1, params)
            backup = [p.detach().clone() for p in params]
            if self.direction == "pretrained":
                with torch.no_grad():
                    for p, dp in zip(params, perturbation(params, theta0, self.r, self.normalize)):
                        p.add_(dp)
            second = batch if self.same_batch else draw()
            with amp.autocast():
                l2 = loss(second)
            g2 = amp.grad(l2, params)
            with torch.no_grad():
                for p, saved, a, b in zip(params, backup, g1, g2):
                    p.copy_(saved)
                    p.grad = (1 - self.alpha) * a + self.alpha * b
            amp.step(opt, params, self.grad_clip)  # (fp16: both gradients carry the same scale; unscaled here)
            return l1.detach()

        return step
