"""What every model config shares: name, scale, precision, sampling, and optional UNet weights."""
from __future__ import annotations

from pathlib import Path

from bench.world.base import DTYPES, Sampling, read_weights
from methods.base import require


class ModelSpec:
    """Base of model configs. `built` specs build their world folder; the others point at one.

    `unet_weights`: a .safetensors (or weights-only torch) file loaded over the model's UNet,
    for example a suspect model to verify. It is checked when the config is instantiated, so a
    missing, corrupt or pickle-based file is refused before any work.
    """

    built = False
    version = "1"

    def __init__(self, name: str, scale: str, resolution: int, precision: str = "fp32", sampling: dict | None = None,
                 eval: dict | None = None, unet_weights: str | None = None):
        require(precision in DTYPES, f"model.precision must be one of {sorted(DTYPES)} (got {precision!r}).")
        require(resolution >= 8 and resolution % 8 == 0,
                f"model.resolution must be a positive multiple of 8 (got {resolution}).")
        self.name, self.scale, self.resolution, self.precision = name, scale, resolution, precision
        self.sampling = Sampling(**(sampling or {"resolution": resolution}))
        self.unet_weights = str(Path(unet_weights).resolve()) if unet_weights else None
        if self.unet_weights:
            read_weights(self.unet_weights)

    def weights_identity(self) -> dict | None:
        """What identifies the UNet weights file in cache keys (path, size, modification time)."""
        if not self.unet_weights:
            return None
        stat = Path(self.unet_weights).stat()
        return {"path": self.unet_weights, "size": stat.st_size, "mtime": stat.st_mtime}
