"""No watermark: the base model unchanged. The reference row of every leaderboard."""
from __future__ import annotations

from methods.base import Key, WatermarkMethod


class NoWatermark(WatermarkMethod):
    """Returns the base UNet as the 'watermarked' model; nothing to verify."""

    name = "none"
    access = "none"
    version = "1"
    verifiable = False
    changes_model = False

    def make_key(self, seed: int, world) -> Key:
        return Key()

    def embed(self, world, key: Key, log_every: int = 0):
        return world.fresh_unet().requires_grad_(False).eval()

    def verify(self, world, unet, key: Key, n_queries: int, seed: int):
        return None

    def watermark_loss(self, world, unet, key: Key, seed: int):
        return None
