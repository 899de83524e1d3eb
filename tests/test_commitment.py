"""Key commitment: the embedding publishes a commitment to its key (hash over a nonce and the key, with the time and
the watermarked weights' fingerprint); the record and an export carry it; `bench.tools.verify` checks the key against
it, reports a key without one as uncommitted, and refuses a key that does not open its commitment."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from bench.cache import Cache, files_digest
from bench.commitment import commit, key_digest, opens
from bench.run.stages import key_commitment, key_folder

NONCE = "ab" * 32


@pytest.fixture(scope="module")
def embed(embedded, shared_cache) -> Path:
    """The embed artifact folder of the micro watermarkdm embedding (the session's, through embed_stage)."""
    e = embedded("watermarkdm")
    return key_folder(Cache(shared_cache), e.key_address).parent


@pytest.fixture
def verify(shared_cache, tmp_path, capsys, monkeypatch):
    """bench.tools.verify.main in this process: (exit status, stdout, stderr)."""
    from bench.tools.verify import main
    monkeypatch.setenv("BENCH_RESULTS", str(tmp_path / "results"))

    def run(*args) -> tuple[int, str, str]:
        code = main([*map(str, args), "--cache", str(shared_cache), "--device", "cpu", "--n-queries", "2"])
        out = capsys.readouterr()
        return code, out.out, out.err
    return run


def test_digest_binds_the_key_not_its_file_layout():
    a = {"bits": torch.tensor([1, 0, 1], dtype=torch.uint8), "w": torch.arange(6.0).reshape(2, 3)}
    meta = {"seed": 3, "target": [1, 2]}
    assert key_digest(a, meta, NONCE) == key_digest(dict(reversed(list(a.items()))), {"target": [1, 2], "seed": 3},
                                                    NONCE)  # order of tensors and of metadata keys: no matter
    flipped = {**a, "bits": torch.tensor([1, 1, 1], dtype=torch.uint8)}
    assert key_digest(flipped, meta, NONCE) != key_digest(a, meta, NONCE)  # one bit of the key
    assert key_digest(a, {**meta, "seed": 4}, NONCE) != key_digest(a, meta, NONCE)  # its metadata
    assert key_digest(a, meta, "cd" * 32) != key_digest(a, meta, NONCE)  # the nonce (hiding)
    assert key_digest({**a, "w": a["w"].double()}, meta, NONCE) != key_digest(a, meta, NONCE)  # the dtype
    c = commit(a, meta, NONCE, "f" * 64, committed_at="2026-01-01T00:00:00+00:00")
    assert opens(c, a, meta, NONCE) and not opens(c, flipped, meta, NONCE)


def test_the_embedding_commits_to_its_key_and_model(embed, embedded):
    e = embedded("watermarkdm")
    c = json.loads((embed / "commitment.json").read_text())
    nonce = json.loads((embed / "key" / "opening.json").read_text())["nonce"]
    assert opens(c, e.key.tensors, e.key.meta, nonce)
    assert c["model_fingerprint"] == files_digest(embed, [embed / "unet.safetensors"])  # the watermarked weights
    assert key_commitment(embed / "key") == c  # what the runner writes into the record's key entry
    assert nonce not in json.dumps(c)  # the public part does not hold the opening


def test_verify_reports_committed_and_uncommitted_keys(embed, verify, tmp_path):
    from bench.tools.verify import export
    code, out, err = verify(embed, embed / "unet.safetensors", "--out", tmp_path / "a.json")
    assert code == 0, err[-2000:]
    result = json.loads((tmp_path / "a.json").read_text())
    assert result["commitment"]["status"] == "committed" and "committed 20" in out
    exported = export(embed, tmp_path / "key")  # an export carries the commitment and its opening
    assert (exported / "commitment.json").is_file() and (exported / "key" / "opening.json").is_file()
    code, _, err = verify(exported, embed / "unet.safetensors", "--out", tmp_path / "b.json")
    assert code == 0 and json.loads((tmp_path / "b.json").read_text())["commitment"]["status"] == "committed"
    bare = tmp_path / "bare"
    shutil.copytree(exported, bare)
    (bare / "commitment.json").unlink()
    (bare / "key" / "opening.json").unlink()
    code, out, err = verify(bare, embed / "unet.safetensors", "--out", tmp_path / "c.json")
    assert code == 0, err[-2000:]
    assert json.loads((tmp_path / "c.json").read_text())["commitment"] == {"status": "uncommitted"}
    assert "UNCOMMITTED" in out


@pytest.mark.parametrize("damage", ["key meta edited", "nonce edited", "opening missing"])
def test_a_key_that_does_not_open_its_commitment_is_refused(embed, verify, tmp_path, damage):
    from bench.tools.verify import export
    folder = export(embed, tmp_path / "key")
    if damage == "key meta edited":
        meta = json.loads((folder / "key" / "key_meta.json").read_text())
        (folder / "key" / "key_meta.json").write_text(json.dumps({**meta, "seed": meta.get("seed", 0) + 1}))
    elif damage == "nonce edited":
        (folder / "key" / "opening.json").write_text(json.dumps({"nonce": "0" * 64}))
    else:
        (folder / "key" / "opening.json").unlink()
    code, _, err = verify(folder, embed / "unet.safetensors", "--out", tmp_path / "v.json")
    assert code == 2 and not (tmp_path / "v.json").exists()
    assert "Traceback" not in err
    paragraph = err.split("error: ", 1)[1].strip()
    assert "\n" not in paragraph and "commitment" in paragraph
