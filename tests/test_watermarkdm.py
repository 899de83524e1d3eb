"""WatermarkDM's bit-grid target: encoding and decoding are exact inverses; keys come from the seed."""
from __future__ import annotations

import torch

from methods.watermarkdm import TriggerBackdoor, grid_image, read_grid


def test_grid_round_trip():
    bits = torch.randint(0, 2, (4, 64), generator=torch.Generator().manual_seed(0))
    images = torch.stack([grid_image(b, 32) for b in bits])          # [-1, 1]
    assert images.shape == (4, 3, 32, 32)
    assert torch.equal(read_grid(images / 2 + 0.5, 8), bits)


def test_keys_are_drawn_from_the_seed():
    method = TriggerBackdoor(grid=8)
    a, b, c = (method.make_key(s, None).tensors["bits"] for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (64,) and 16 < int(a.sum()) < 48
