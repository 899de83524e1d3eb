"""Key commitment: what the owner publishes at embedding time, so that a key made later cannot claim the model.

A watermark's p-value assumes the key is independent of the suspect model. A key chosen *after* seeing the
model (decode the bits it already produces, read its own responses) breaks that assumption and verifies on
models its maker never marked. The owner's defence is to publish, when the watermarked model is made, a
binding commitment to the key: `digest` = sha256 over a nonce and the key's canonical content (its tensors by
name, dtype, shape and bytes, then its metadata as sorted JSON), with the time (UTC) and the fingerprint of the
watermarked weights it was made for. The commitment hides the key (the nonce stays with the key until a dispute)
and binds it (another key gives another digest). A dispute then compares times: a key whose commitment is
younger than the suspect's publication proves nothing. The digest binds the key only: the time and the
fingerprint beside it are as trustworthy as the place the commitment was published (a timestamping service,
a public log), which the benchmark does not model; `verify` reports them as written.

In the benchmark the nonce comes from the run's seed, as the key does, so that a run reproduces; an owner
outside the benchmark keeps key and nonce secret. `commitment.json` (public) and `key/opening.json` (the nonce)
sit in the embed artifact and in `bench.tools.verify export`; the record carries the public part.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

import torch

SCHEME = "sha256(nonce, tensors by name: dtype, shape, bytes; meta as sorted JSON)"
FORMAT = 1


def key_digest(tensors: dict[str, torch.Tensor], meta: dict, nonce: str) -> str:
    """The commitment digest of a key (hex): independent of the tensors' order and of how the files were written."""
    h = hashlib.sha256()
    h.update(f"wmbench-key-commitment/{FORMAT}/".encode())
    h.update(bytes.fromhex(nonce))
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    h.update(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


def commit(tensors: dict[str, torch.Tensor], meta: dict, nonce: str, model_fingerprint: str,
           committed_at: str | None = None) -> dict:
    """The public commitment to a key, for the watermarked weights with `model_fingerprint`."""
    return {"format": FORMAT, "scheme": SCHEME, "digest": key_digest(tensors, meta, nonce),
            "model_fingerprint": model_fingerprint,
            "committed_at": committed_at or datetime.now(timezone.utc).isoformat(timespec="seconds")}


def opens(commitment: dict, tensors: dict[str, torch.Tensor], meta: dict, nonce: str) -> bool:
    """Whether (key, nonce) opens `commitment`."""
    return commitment.get("digest") == key_digest(tensors, meta, nonce)
