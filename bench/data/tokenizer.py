"""A genuine CLIP tokenizer built offline from the BPE vocabulary shipped by open-clip-torch.

open-clip-torch bundles OpenAI's `bpe_simple_vocab_16e6.txt.gz`. From it we rebuild CLIP's
vocabulary (256 byte characters, the same with '</w>', 48,894 merges, then <|startoftext|> and
<|endoftext|>: 49,408 tokens) and hand it to `transformers.CLIPTokenizer`. The package is only
located, never imported (importing it pulls in timm and torchvision).
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path

from transformers import CLIPTokenizer

from bench.data.common import package_file
from bench.errors import BenchError, DatasetNotFoundError

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408
NUM_MERGES = 49152 - 256 - 2
MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CACHE_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json")


def _byte_characters() -> list[str]:
    """Return the 256 characters standing for bytes in byte-level BPE, in CLIP's vocabulary order.

    Printable bytes map to themselves and come first; the others map to chr(256 + k) and follow.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + k) for k in range(len(others))]


def _read_merges(bpe_path: Path) -> list[tuple[str, str]]:
    """Return CLIP's merges: the first NUM_MERGES lines after the header of the BPE file."""
    with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")[1:NUM_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
        raise DatasetNotFoundError(
            f"{bpe_path} is not CLIP's BPE vocabulary (expected {NUM_MERGES} merge pairs). "
            "Fix: pip install --force-reinstall open-clip-torch"
        )
    return merges


def _clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Return CLIP's token -> id map built from the byte characters and the merges."""
    chars = _byte_characters()
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in CACHE_FILES)


def _load(folder: Path) -> CLIPTokenizer:
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), model_max_length=MAX_LENGTH)
    if len(tokenizer) != VOCAB_SIZE:
        raise BenchError(f"the cached CLIP tokenizer in {folder} has {len(tokenizer)} tokens, not {VOCAB_SIZE}. "
                         f"Fix: delete {folder} and run again to rebuild it")
    return tokenizer


def _write(folder: Path) -> None:
    """Write vocab.json, merges.txt and the transformers tokenizer files into `folder`."""
    bpe_path = package_file("open_clip", BPE_FILE, "open-clip-torch", "CLIP BPE vocabulary")
    merges = _read_merges(bpe_path)
    vocab = _clip_vocab(merges)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_text = "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n"
    (folder / "merges.txt").write_text(merges_text, encoding="utf-8")
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, bos_token=BOS, eos_token=EOS, unk_token=EOS,
                              pad_token=EOS, model_max_length=MAX_LENGTH)
    tokenizer.save_pretrained(str(folder))


def build_clip_tokenizer(cache_dir: Path) -> CLIPTokenizer:
    """Return CLIP's tokenizer (49,408 tokens, max length 77, pad = <|endoftext|> as in Stable Diffusion).

    The files are written once into `cache_dir` (through a temporary folder renamed into place, so
    a crash or a concurrent build never leaves a half-written cache) and reused afterwards.
    """
    cache_dir = Path(cache_dir)
    if not _is_complete(cache_dir):
        cache_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}.tmp-", dir=cache_dir.parent))
        try:
            _write(tmp)
            tmp.chmod(0o755)  # mkdtemp makes it private to the user
            try:
                os.replace(tmp, cache_dir)  # also replaces an empty folder
            except OSError:
                if not _is_complete(cache_dir):  # not a concurrent build that finished first
                    raise BenchError(
                        f"cannot create the CLIP tokenizer cache: {cache_dir} exists and is not a complete "
                        f"tokenizer folder (needs {', '.join(CACHE_FILES)}). Fix: delete it or choose another folder"
                    ) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _load(cache_dir)
