"""What every model config shares: name, scale, precision, sampling, training settings, and optional UNet weights."""
from __future__ import annotations

from pathlib import Path

from bench.diffusion import GEN_BATCH
from bench.training import TrainSettings, check_training
from bench.world.base import DTYPES, Sampling, read_weights
from bench.errors import require


class ModelSpec:
    """Base of model configs. `built` specs build their world folder; the others point at one.

    `unet_weights`: a .safetensors (or weights-only torch) file loaded over the model's UNet,
    for example a suspect model to verify. It is checked when the config is instantiated, so a
    missing, corrupt or pickle-based file is refused before any work.

    `source`: `build` builds the world on this machine (cached by its config); `shipped` (tiny only) loads the
    build committed in `bench/world/tiny_world/`, checked against its fingerprint, and builds nothing.

    Training settings (every embedding and attack loop of the world, `bench.training.Amp`):
    `train_precision` fp32 (default) | bf16 | fp16 (autocast, fp32 master weights; fp16 with a
    gradient scaler, GPU only), `gradient_checkpointing`, `optimizer` adamw | adamw8bit.
    `eval.gen_batch`: images per pipeline call when generating (verification, FID, CLIP score).
    """

    built = False
    shippable = False  # a build of this world's default config ships with the package (`bench.world.shipped`)
    version = "1"

    def __init__(self, name: str, scale: str, resolution: int, precision: str = "fp32", sampling: dict | None = None,
                 eval: dict | None = None, unet_weights: str | None = None, train_precision: str = "fp32",
                 gradient_checkpointing: bool = False, optimizer: str = "adamw", source: str = "build"):
        sources = ("build", "shipped") if self.shippable else ("build",)
        require(source in sources, f"model.source must be one of {list(sources)} for model={name} (got {source!r}): "
                "`shipped` loads the world committed with the package (the tiny world only), `build` builds the "
                "config on this machine.")
        self.source = source
        require(precision in DTYPES, f"model.precision must be one of {sorted(DTYPES)} (got {precision!r}).")
        require(resolution >= 8 and resolution % 8 == 0,
                f"model.resolution must be a positive multiple of 8 (got {resolution}).")
        check_training(train_precision, optimizer)
        require(isinstance(gradient_checkpointing, bool),
                f"model.gradient_checkpointing must be true or false (got {gradient_checkpointing!r}).")
        self.gen_batch = (eval or {}).get("gen_batch", GEN_BATCH)
        require(isinstance(self.gen_batch, int) and not isinstance(self.gen_batch, bool) and self.gen_batch >= 1,
                f"model.eval.gen_batch must be a positive integer (images per pipeline call; got {self.gen_batch!r}).")
        self.training = TrainSettings(train_precision, gradient_checkpointing, optimizer)
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
