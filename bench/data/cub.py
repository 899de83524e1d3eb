"""CUB-200-2011 birds (Wah et al., 2011) with the text descriptions of Reed et al. (2016).

Accepted layout (root may also be the CUB_200_2011 folder itself):

    <root>/CUB_200_2011/images.txt               "<image id> <class>/<file>.jpg" per line
    <root>/CUB_200_2011/train_test_split.txt     "<image id> <1 = train, 0 = test>" per line
    <root>/CUB_200_2011/images/<class>/<file>.jpg
    <text>/<class>/<file>.txt                    one caption per line (usually 10)

where <text> is the first existing of <root>/text, <root>/text_c10, <root>/CUB_200_2011/text,
<root>/CUB_200_2011/text_c10 ("text_c10" is the folder name in Reed et al.'s cvpr2016_cub archive,
"text" in AttnGAN's birds.zip). Images load lazily on access.
"""
from __future__ import annotations

from pathlib import Path

from bench.data.common import ImageFiles, check_resolution, choose_captions, require, subset_indices
from bench.errors import ConfigError, DatasetNotFoundError

LAYOUT = ("<root>/CUB_200_2011/{images.txt, train_test_split.txt, images/<class>/<file>.jpg} and "
          "<root>/text/<class>/<file>.txt (or text_c10, at <root> or inside CUB_200_2011)")
FIX = ("unpack CUB_200_2011.tgz (Caltech) and the text descriptions of Reed et al. (cvpr2016_cub: text_c10) "
       "into one folder and point data.root at it")
TEXT_NAMES = ("text", "text_c10")


def _read_pairs(path: Path) -> list[tuple[str, str]]:
    """Return the "<id> <value>" lines of a CUB metadata file as (id, value) pairs."""
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise DatasetNotFoundError(f"{path}, line {n}: expected '<id> <value>', got {line!r}. Fix: {FIX}")
            pairs.append((parts[0], parts[1].strip()))
    return pairs


def _text_dir(root: Path, cub: Path) -> Path:
    for base in (root, cub):
        for name in TEXT_NAMES:
            if (base / name).is_dir():
                return base / name
    raise DatasetNotFoundError(f"CUB text descriptions not found: none of {root}/text, {root}/text_c10, {cub}/text, "
                               f"{cub}/text_c10 exists. Expected layout: {LAYOUT}. Fix: {FIX}")


def _captions(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetNotFoundError(f"CUB caption file {path} is missing. Expected layout: {LAYOUT}. Fix: {FIX}")
    lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    captions = [line for line in lines if line]
    if not captions:
        raise DatasetNotFoundError(f"CUB caption file {path} is empty. Fix: {FIX}")
    return captions


def load_cub(root: Path | str, resolution: int, split: str = "train", seed: int = 0, max_items: int | None = None,
             caption_choice: str = "first") -> ImageFiles:
    """Return CUB-200-2011 as a lazy dataset: one item per image, (image (3, r, r) in [-1, 1], caption).

    `split` is "train", "test" (the official train_test_split.txt) or "all"; items follow images.txt.
    caption_choice "first" takes each image's first caption, "seeded" draws one with `seed`;
    `max_items` keeps a seeded random subset.
    """
    if split not in ("train", "test", "all"):
        raise ConfigError(f"CUB split must be 'train', 'test' or 'all', got {split!r}")
    resolution = check_resolution(resolution)
    root = Path(root)
    require(root, "CUB folder", LAYOUT, FIX)
    cub = root if (root / "images.txt").is_file() and not (root / "CUB_200_2011").is_dir() else root / "CUB_200_2011"
    require(cub, "CUB_200_2011 folder", LAYOUT, FIX)
    images = _read_pairs(require(cub / "images.txt", "CUB image list", LAYOUT, FIX))
    is_train = dict(_read_pairs(require(cub / "train_test_split.txt", "CUB train/test split", LAYOUT, FIX)))
    image_dir = require(cub / "images", "CUB image folder", LAYOUT, FIX)
    text_dir = _text_dir(root, cub)
    chosen = []
    for image_id, rel in images:
        if image_id not in is_train:
            raise DatasetNotFoundError(f"{cub / 'train_test_split.txt'} has no entry for image {image_id}. Fix: {FIX}")
        if split == "all" or (is_train[image_id] == "1") == (split == "train"):
            chosen.append(rel)
    options = [_captions((text_dir / rel).with_suffix(".txt")) for rel in chosen]
    captions = choose_captions(options, caption_choice, seed)
    keep = subset_indices(len(chosen), max_items, seed)
    return ImageFiles([image_dir / chosen[k] for k in keep], [captions[k] for k in keep], resolution,
                      name=f"cub-{split}", fix=FIX)
