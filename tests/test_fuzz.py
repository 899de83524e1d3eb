"""Property-based fuzzing of the parsers of untrusted files: the record parser (`bench.untrusted.parse_record`)
and the key-folder parser (`bench.tools.verify.load_key_source`). Arbitrary JSON in gives a parsed object or the
one-paragraph ConfigError, never another exception, and the parsers write nothing."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.errors import ConfigError
from bench.untrusted import parse_record

JSON = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=False) |
                    st.text(max_size=20), lambda inner: st.lists(inner, max_size=4) |
                    st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


def _record() -> dict:
    from tests.test_untrusted import good_record
    return good_record(0)


GOOD = None


def paths(node, prefix=()):
    """Every (path) to a value in a nested JSON object."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from paths(v, prefix + (i,))


def replaced(node, path, value):
    node = copy.deepcopy(node)
    if not path:
        return value
    target = node
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    return node


def parses_or_refuses(obj) -> None:
    try:
        out = parse_record(obj, "fuzz")
    except ConfigError as err:
        assert "\n" not in str(err) and str(err)
    else:
        assert out is obj


@FUZZ
@given(JSON)
def test_arbitrary_json_record(obj):
    parses_or_refuses(obj)


@FUZZ
@given(st.data(), JSON)
def test_a_record_with_one_field_replaced(data, value):
    global GOOD
    GOOD = GOOD or _record()
    where = data.draw(st.sampled_from(list(paths(GOOD))))
    parses_or_refuses(replaced(GOOD, where, value))


KEY_FILES = ["world.json", "export.json", "method.json", "data.json", "key/key_meta.json"]


@pytest.fixture(scope="module")
def key_folder(tmp_path_factory) -> Path:
    """An exported key folder written by hand (no run): the files `load_key_source` parses, a real safetensors key."""
    import torch
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    from tests.helpers import SHRINK, compose_cfg
    cfg = OmegaConf.to_container(compose_cfg([*SHRINK, "method=watermarkdm"]), resolve=True)
    folder = tmp_path_factory.mktemp("fuzz-key")
    (folder / "key").mkdir()
    save_file({"bits": torch.zeros(8)}, str(folder / "key" / "key.safetensors"))
    files = {"world.json": {"model": cfg["model"], "address": "ab" * 32}, "method.json": cfg["method"],
             "data.json": cfg["data"], "export.json": {"format": 1, "seed": 0, "embed_address": "cd" * 32},
             "key/key_meta.json": {"trigger": "x", "grid": 2}}
    for name, obj in files.items():
        (folder / name).write_text(json.dumps(obj))
    return folder


@FUZZ
@given(st.sampled_from(KEY_FILES), JSON, st.booleans())
def test_key_folder_with_one_file_replaced(key_folder, tmp_path_factory, name, value, inside):
    from bench.tools.verify import load_key_source
    folder = tmp_path_factory.mktemp("k")
    shutil.copytree(key_folder, folder, dirs_exist_ok=True)
    original = json.loads((key_folder / name).read_text())
    if inside and isinstance(original, dict) and original:  # replace one field, not the whole file
        field = sorted(original)[hash(json.dumps(value, sort_keys=True)) % len(original)]
        value = {**original, field: value}
    (folder / name).write_text(json.dumps(value))
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    try:
        src = load_key_source(folder)
    except ConfigError as err:
        assert "\n" not in str(err)
    else:
        assert isinstance(src["method"], dict) and isinstance(src["world"]["model"], dict)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    shutil.rmtree(folder)
