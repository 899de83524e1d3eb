"""scripts/make_reference.py never loses published work silently: a results folder lacking published records is
refused unless --add or --replace, a missing folder is refused, and searches published before stay."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import make_reference  # noqa: E402


def folder_with(tmp: Path, name: str, records: list[Path]) -> Path:
    for rec in records:
        shutil.copytree(rec.parent, tmp / name / "records" / rec.parent.name)
    return tmp / name


def published(ref: Path) -> set[str]:
    return {p.parent.name for p in (ref / "records").glob("*/record.json")}


def test_publishing_refuses_to_drop_published_records_unless_told(tmp_path):
    committed = sorted((ROOT / "results" / "reference" / "records").glob("*-full_ft-*/record.json"))[:2]
    assert len(committed) == 2, "the committed reference holds full_ft records"
    both, one = folder_with(tmp_path, "both", committed), folder_with(tmp_path, "one", committed[:1])
    ref = tmp_path / "reference"
    make_reference.main([str(both), "--reference", str(ref)])
    names = {p.parent.name for p in committed}
    assert published(ref) == names and (ref / "leaderboard.csv").is_file()
    (ref / "search" / "earlier").mkdir(parents=True)
    (ref / "search" / "earlier" / "best.json").write_text("{}")

    with pytest.raises(SystemExit) as refused:  # a folder that lacks a published record
        make_reference.main([str(one), "--reference", str(ref)])
    assert "would drop them" in str(refused.value) and committed[1].parent.name in str(refused.value)
    assert published(ref) == names  # nothing written
    with pytest.raises(SystemExit) as missing:
        make_reference.main([str(tmp_path / "nowhere"), "--reference", str(ref)])
    assert "has no records/ folder" in str(missing.value) and published(ref) == names

    make_reference.main([str(one), "--reference", str(ref), "--add"])
    assert published(ref) == names
    make_reference.main([str(one), "--reference", str(ref), "--replace"])
    assert published(ref) == {committed[0].parent.name}
    assert (ref / "search" / "earlier" / "best.json").is_file()  # a search published before stays
