"""Writers of tiny dataset files in the published layouts, shared by the data tests."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
from PIL import Image

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    """Write a uint8 array as an IDX file (magic 0x0000 08 <ndim>, big-endian dims, raw bytes)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    data = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def striped_image(size: tuple[int, int] = (60, 30)) -> Image.Image:
    """Return a wide RGB image: green left quarter, red centre half, blue right quarter."""
    w, h = size
    array = np.zeros((h, w, 3), dtype=np.uint8)
    array[:, : w // 4] = GREEN
    array[:, w // 4: w - w // 4] = RED
    array[:, w - w // 4:] = BLUE
    return Image.fromarray(array)


def solid_image(color: tuple[int, int, int], size: tuple[int, int] = (24, 32)) -> Image.Image:
    return Image.new("RGB", size, color)


def make_cub(root: Path, text_at: str = "text") -> Path:
    """CUB-200-2011 layout with 3 images in 2 classes (ids 1, 3 train; 2 test); captions under `text_at`."""
    cub = root / "CUB_200_2011"
    rels = ["001.Red_bird/Red_Bird_0001_1.jpg", "001.Red_bird/Red_Bird_0002_2.jpg",
            "002.Blue_bird/Blue_Bird_0003_3.jpg"]
    colors = [RED, RED, BLUE]
    for rel, color in zip(rels, colors):
        (cub / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        solid_image(color, (40, 30)).save(cub / "images" / rel, quality=95)
        text = root / text_at / rel
        text.parent.mkdir(parents=True, exist_ok=True)
        name = Path(rel).stem
        text.with_suffix(".txt").write_text(f"this bird {name} is first.\nthis bird {name} is second.\n\n")
    (cub / "images.txt").write_text("".join(f"{i} {rel}\n" for i, rel in enumerate(rels, 1)))
    (cub / "train_test_split.txt").write_text("1 1\n2 0\n3 1\n")
    return root
