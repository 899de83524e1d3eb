"""WatermarkDM's bit-grid target: encoding and decoding are exact inverses; the key is grid x grid balanced bits.
(Keys from the seed, embed -> verify and the null model: tests/test_contract.py.)"""
from __future__ import annotations

import torch

from methods.watermarkdm import TriggerBackdoor, grid_image, read_grid


def test_grid_round_trip():
    bits = torch.randint(0, 2, (4, 64), generator=torch.Generator().manual_seed(0))
    images = torch.stack([grid_image(b, 32) for b in bits])          # [-1, 1]
    assert images.shape == (4, 3, 32, 32)
    assert torch.equal(read_grid(images / 2 + 0.5, 8), bits)


def test_key_is_a_grid_of_bits():
    a = TriggerBackdoor(grid=8).make_key(0, None).tensors["bits"]
    assert a.shape == (64,) and 16 < int(a.sum()) < 48
