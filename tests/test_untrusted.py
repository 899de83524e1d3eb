"""Hostile inputs on the micro world: key folders, suspects and results folders from someone else run no code,
overwrite nothing, read nothing outside their folder, and never break a later sweep.

Each case is refused with exit status 2 and one paragraph (or, where nothing is wrong for the harness, handled
without running the payload). The code-execution cases carry a payload that would create a marker file; the
tests assert that it never appears."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench.identity import digest
from bench.untrusted import identity_config
from tests.helpers import MICRO, SHRINK, bench_cli, compose_cfg, records


def sha(path: Path) -> str:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


def payload(marker: Path) -> dict:
    """A config that, if Hydra instantiated it, would create `marker` (builtins.open is not on Hydra's blocklist)."""
    return {"_target_": "builtins.open", "_args_": [str(marker), "w"]}


def one_paragraph(err: str, *words: str) -> str:
    assert "Traceback" not in err and err.count("error: ") == 1, err[-3000:]
    text = err.split("error: ", 1)[1].strip().split("\n\n")[0]  # a sweep's summary may follow the paragraph
    assert "\n" not in text, text
    for w in words:
        assert w.lower() in text.lower(), text
    return text


@pytest.fixture(scope="module")
def embed(shared_cache, tmp_path_factory) -> Path:
    """The embed folder of a micro watermarkdm run in the session cache."""
    results = tmp_path_factory.mktemp("untrusted-run")
    bench_cli(["method=watermarkdm", "attack=none", "-m", *SHRINK], results, shared_cache, check=True)
    (rec,) = records(results).values()
    return Path(rec["key"]["folder"]).parent


@pytest.fixture
def verify(shared_cache, tmp_path, capsys, monkeypatch):
    """bench.tools.verify.main in this process: (exit status, stderr)."""
    from bench.tools.verify import main
    monkeypatch.setenv("BENCH_RESULTS", str(tmp_path / "results"))

    def run(*args) -> tuple[int, str]:
        code = main([*map(str, args), "--cache", str(shared_cache), "--device", "cpu", "--n-queries", "2"])
        return code, capsys.readouterr().err
    return run


@pytest.fixture
def exported(embed, tmp_path) -> Path:
    from bench.tools.verify import export
    return export(embed, tmp_path / "key")


# ---- 1. a key folder runs no code -------------------------------------------------------------------
@pytest.mark.parametrize("where", ["method.json", "data.json", "world.json", "method.json nested", "key.json"])
def test_key_folder_target_runs_nothing(embed, exported, verify, tmp_path, where):
    marker = tmp_path / "pwned"
    folder = exported
    if where == "key.json":  # an embed folder whose cache card names the payload as the method
        folder = tmp_path / "embed"
        shutil.copytree(embed, folder)
        card = json.loads((folder / "key.json").read_text())
        card["key"]["method"] = payload(marker)
        (folder / "key.json").write_text(json.dumps(card))
    elif where == "world.json":
        world = json.loads((folder / "world.json").read_text())
        (folder / "world.json").write_text(json.dumps({**world, "model": payload(marker)}))
    elif where == "method.json nested":
        method = json.loads((folder / "method.json").read_text())
        (folder / "method.json").write_text(json.dumps({**method, "extra": payload(marker)}))
    else:
        (folder / where).write_text(json.dumps(payload(marker)))
    code, err = verify(folder, embed / "unet.safetensors", "--out", tmp_path / "v.json")
    assert code == 2 and not marker.exists() and not (tmp_path / "v.json").exists()
    one_paragraph(err, "never")


def test_interpolation_in_a_key_is_refused(exported, embed, verify, tmp_path):
    method = json.loads((exported / "method.json").read_text())
    (exported / "method.json").write_text(json.dumps({**method, "bits": "${oc.env:HOME}"}))
    code, err = verify(exported, embed / "unet.safetensors", "--out", tmp_path / "v.json")
    assert code == 2 and not (tmp_path / "v.json").exists()
    one_paragraph(err, "interpolation")


# ---- 3. verify never destroys evidence ----------------------------------------------------------------
def test_out_never_overwrites_the_suspect_or_the_key(embed, exported, verify, tmp_path):
    suspect = tmp_path / "suspect.safetensors"
    shutil.copy(embed / "unet.safetensors", suspect)
    before_s, before_k = sha(suspect), sha(exported)
    for out in (suspect, exported / "key" / "key_meta.json", exported / "new.json"):
        code, err = verify(exported, suspect, "--out", out)
        assert code == 2
        one_paragraph(err, "never")
    (tmp_path / "old.json").write_text("{}")
    code, err = verify(exported, suspect, "--out", tmp_path / "old.json")
    assert code == 2 and (tmp_path / "old.json").read_text() == "{}"
    one_paragraph(err, "already exists")
    assert sha(suspect) == before_s and sha(exported) == before_k


def test_a_second_suspect_of_the_same_name_keeps_the_first_verdict(embed, exported, micro_world, verify, tmp_path):
    from safetensors.torch import save_file
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(embed / "unet.safetensors", tmp_path / "a" / "unet.safetensors")
    save_file({k: v.contiguous() for k, v in micro_world.unet.state_dict().items()}, str(tmp_path / "b" / "unet.safetensors"))
    assert verify(exported, tmp_path / "a" / "unet.safetensors")[0] == 0
    assert verify(exported, tmp_path / "b" / "unet.safetensors")[0] == 0
    assert verify(exported, tmp_path / "a" / "unet.safetensors")[0] == 0  # the same pair again: a new file
    verdicts = sorted((tmp_path / "results" / "verify").glob("unet.safetensors.*.verify.json"))
    assert len(verdicts) == 3
    detected = sorted(json.loads(p.read_text())["detected"] for p in verdicts)
    assert detected == [False, True, True]


# ---- 4. a key chooses no world and no file -------------------------------------------------------------
def test_a_tampered_world_builds_nothing(embed, exported, verify, tmp_path, shared_cache):
    worlds = sorted(p.name for p in (shared_cache / "world").iterdir())
    world = json.loads((exported / "world.json").read_text())
    world["model"] = {**world["model"], "name": "../../elsewhere", "seed": 99}
    (exported / "world.json").write_text(json.dumps(world))
    code, err = verify(exported, embed / "unet.safetensors", "--out", tmp_path / "v.json")
    assert code == 2 and not (tmp_path / "v.json").exists()
    one_paragraph(err, "not in the cache", "not built")
    # no world of the tampered config was built or begun (other test workers may build other worlds meanwhile)
    new = [p for p in (shared_cache / "world").iterdir() if p.name not in worlds]
    assert not [p for p in new if (p / "key.json").is_file() and "elsewhere" in (p / "key.json").read_text()]


def test_a_key_names_no_file_to_read(embed, exported, verify, tmp_path):
    world = json.loads((exported / "world.json").read_text())
    world["model"] = {**world["model"], "unet_weights": "../../../../etc/passwd"}  # dropped: never read
    (exported / "world.json").write_text(json.dumps(world))
    assert verify(exported, embed / "unet.safetensors", "--out", tmp_path / "v.json")[0] == 0
    assert json.loads((tmp_path / "v.json").read_text())["detected"]
    data = json.loads((exported / "data.json").read_text())
    (exported / "data.json").write_text(json.dumps({**data, "root": "/etc"}))
    code, err = verify(exported, embed / "unet.safetensors", "--out", tmp_path / "w.json")
    assert code == 2
    one_paragraph(err, "never chooses a file", "--data-root")


# ---- 5. malformed keys: one paragraph ------------------------------------------------------------------
@pytest.mark.parametrize("file,content", [
    ("world.json", []), ("export.json", []), ("key/key_meta.json", []), ("method.json", "watermarkdm"),
    ("export.json", {"seed": "../../x"}), ("export.json", {"seed": 1.5, "embed_address": None}),
    ("export.json", {"seed": 0, "embed_address": "../../x"}), ("world.json", {"model": {}}),
    ("key/key_meta.json", {"trigger": 3, "grid": "x"}), ("data.json", 7), ("world.json", "{not json"),
])
def test_malformed_key_files_are_one_paragraph(embed, exported, verify, tmp_path, file, content):
    (exported / file).write_text(content if isinstance(content, str) and file.endswith(".json") and
                                 content.startswith("{") else json.dumps(content))
    code, err = verify(exported, embed / "unet.safetensors", "--out", tmp_path / "v.json")
    assert code == 2 and not (tmp_path / "v.json").exists()
    one_paragraph(err)


def test_an_empty_embed_card_is_one_paragraph(embed, verify, tmp_path):
    shutil.copytree(embed, tmp_path / "e", ignore=shutil.ignore_patterns("unet.safetensors"))
    (tmp_path / "e" / "key.json").write_text("{}")
    code, err = verify(tmp_path / "e", embed / "unet.safetensors", "--out", tmp_path / "v.json")
    assert code == 2
    one_paragraph(err, "card")


# ---- results folders: records --------------------------------------------------------------------------
def good_record(seed: int = 0, **overrides) -> dict:
    """A record as the runner writes it (micro roma x full_ft), with a few metrics."""
    from bench.identity import plan
    p = plan(compose_cfg([*MICRO, "method=roma", "attack=full_ft", f"seed={seed}"]),
             {"model": "micro", "data": "micro", "method": "roma", "attack": "full_ft", "metrics": "default"}, [])
    rec = {"record_version": 2, "run_id": p["run_id"], "seed": seed, "status": "complete", "identity": p["identity"],
           "versions": p["versions"], "config": p["config"], "model": "micro", "method": "roma", "attack": "full_ft",
           "metrics": {"verify/attacked/bit_acc": {"value": 0.5 + seed / 10, "higher_is_better": True},
                       "utility/attacked/fid_increase": {"value": -3.25 - seed, "higher_is_better": False}},
           "curves": {}}
    return {**rec, **overrides}


def rehash(rec: dict) -> dict:
    """What a careful forger does: recompute the identity from the (edited) config, so only content checks bite."""
    hashed = identity_config(rec["config"], rec["seed"])
    rec["identity"] = {**rec["identity"], "group": digest(hashed),
                       "components": {g: digest(hashed.get(g)) for g in ("model", "data", "method", "attack", "metrics")}}
    return rec


def put(folder: Path, rec, name: str | None = None) -> Path:
    name = name or rec["run_id"]
    path = folder / "records" / name / "record.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rec if isinstance(rec, str) else json.dumps(rec))
    return path


def leaderboard(*args) -> tuple[int, str]:
    """`python -m bench.tools.leaderboard ARGS` (in a forked child: `run_module`): (exit status, stderr)."""
    from tests.helpers import run_module
    proc = run_module("bench.tools.leaderboard", [*map(str, args)], timeout=300)
    return proc.returncode, proc.stderr


def test_a_record_logger_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    rec = good_record()
    rec["config"] = {**rec["config"], "logger": payload(marker)}  # Hydra's _args_: not a record the harness wrote
    put(tmp_path, rec)
    code, err = leaderboard(tmp_path)
    assert code == 2 and not marker.exists()
    one_paragraph(err, "config.logger sets '_args_'")
    rec["config"]["logger"] = {"_target_": "pathlib.Path.touch", "self": str(marker)}  # well-formed, still inert
    put(tmp_path, rec)
    code, err = leaderboard(tmp_path, "--logger", "none")
    assert code == 0, err[-2000:]
    assert not marker.exists()


def test_roc_instantiates_no_record_config(tmp_path):
    marker = tmp_path / "pwned"
    for seed in (0, 1):
        rec = good_record(seed)
        # well-formed (no Hydra special keys), so only the registry of conf/model/ stands between it and Hydra
        rec["config"] = {**rec["config"], "model": {"_target_": "pathlib.Path.touch", "self": str(marker)}}
        put(tmp_path, rehash(rec))
    from tests.helpers import run_module
    proc = run_module("bench.tools.roc", [str(tmp_path)], timeout=300)
    assert proc.returncode == 2 and not marker.exists()
    one_paragraph(proc.stderr, "not one of this harness's model components")


BAD_RECORDS = {
    "not json": "{not json",
    "a list": "[]",
    "missing fields": json.dumps({"record_version": 2, "run_id": "x"}),
    "wrong metric type": lambda r: r["metrics"].update({"verify/attacked/bit_acc": {"value": [1, 2]}}),
    "no identity": lambda r: r.pop("identity"),
    "older format": lambda r: r.update(record_version=1),
    "run id a path": lambda r: r.update(run_id="../../outside_secret"),
    "claims another row": lambda r: r["config"]["method"].update(r=0.5),
    "seed a string": lambda r: r.update(seed="0"),
}


@pytest.mark.parametrize("case", list(BAD_RECORDS))
def test_a_bad_record_is_refused_naming_it_and_nothing_is_written(tmp_path, case):
    put(tmp_path, good_record(0))
    put(tmp_path, good_record(1))
    assert leaderboard(tmp_path)[0] == 0
    before = {n: (tmp_path / n).read_bytes() for n in ("leaderboard.csv", "leaderboard.md", "leaderboard_meta.json")}
    bad = BAD_RECORDS[case]
    if callable(bad):
        rec = good_record(2)
        bad(rec)
        bad = json.dumps(rec)
    path = put(tmp_path, bad, name="hostile")
    code, err = leaderboard(tmp_path)
    assert code == 2
    one_paragraph(err, str(path))
    assert {n: (tmp_path / n).read_bytes() for n in before} == before  # the old tables stand
    code, err = leaderboard(tmp_path, "--skip-bad")
    assert code == 0, err[-2000:]
    meta = json.loads((tmp_path / "leaderboard_meta.json").read_text())
    assert meta["skipped_records"] == [str(path)] and meta["n_records"] == 2
    assert pd.read_csv(tmp_path / "leaderboard.csv").n_seeds.tolist() == [2]


def test_a_huge_record_is_refused_unread(tmp_path):
    put(tmp_path, good_record(0))
    path = put(tmp_path, "", name="huge")
    with open(path, "wb") as fh:  # 200 MB, sparse: refused by its size, never read into memory
        fh.truncate(200 * 2 ** 20)
    code, err = leaderboard(tmp_path)
    assert code == 2
    one_paragraph(err, "200.0 MiB", "16 MiB")


def test_a_hostile_record_cannot_relabel_an_honest_row(tmp_path):
    honest = good_record(0)
    put(tmp_path, honest)
    forged = good_record(1)
    forged["identity"] = {**forged["identity"], "group": honest["identity"]["group"]}  # claims the row, other labels
    forged["config"]["method"]["r"] = 0.9
    put(tmp_path, forged)
    code, err = leaderboard(tmp_path)
    assert code == 2
    one_paragraph(err, "claims row")


def test_report_embeds_nothing_outside_the_results_folder(tmp_path):
    (tmp_path / "outside_secret").mkdir()
    (tmp_path / "outside_secret" / "samples.json").write_text(json.dumps({"rows": [{"row": "SECRET-ROW"}]}))
    results = tmp_path / "results"
    put(results, good_record(0))
    put(results, good_record(1, run_id="../../outside_secret"), name="evil")
    assert leaderboard(results, "--skip-bad")[0] == 0
    assert "SECRET-ROW" not in (results / "report.html").read_text()


def test_a_bad_record_never_breaks_a_later_run(tmp_path, shared_cache):
    put(tmp_path, "{broken", name="hostile")
    proc = bench_cli(["method=none", "attack=none", "metrics=verification", "-m", *MICRO, "data.n_owner=64",
                      "data.n_attacker=64", "data.n_holdout=16"], tmp_path, shared_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr  # Hydra sends the job log to stdout
    assert "skipped" in log and "hostile" in log
    assert (tmp_path / "leaderboard.csv").is_file()
    assert len(list((tmp_path / "records").glob("*/record.json"))) == 2
    from bench.record import scan_records
    good, bad = scan_records(tmp_path)  # the run's own record (LMC curves and all) parses; only the hostile file fails
    assert len(good) == 1 and [p.parent.name for p, _ in bad] == ["hostile"]


# ---- 7. spreadsheet and markdown injection -------------------------------------------------------------
def test_csv_cells_are_inert_and_numbers_stay_numbers(tmp_path):
    from bench.analysis.leaderboard import write_leaderboard
    labels = ["=HYPERLINK(\"http://x\",\"y\")", "+cmd|' /C calc'!A0", "@SUM(1+1)", "<script>alert(1)</script>"]
    for i, text in enumerate(labels):
        rec = good_record(0)
        rec["config"]["method"]["r"] = 0.1 + i / 10  # four rows
        rehash(rec)
        rec["run_id"] += f"-{i}"
        rec["identity"]["labels"] = {**rec["identity"]["labels"], "method": text}
        put(tmp_path, rec)
    df = write_leaderboard(tmp_path)
    back = pd.read_csv(tmp_path / "leaderboard.csv")
    for col in back.columns:
        for v in back[col].dropna():
            assert not (isinstance(v, str) and v[:1] in "=+-@"), (col, v)
    assert back["utility/attacked/fid_increase"].tolist() == df["utility/attacked/fid_increase"].tolist()
    assert (back["utility/attacked/fid_increase"] < 0).all() and back["verify/attacked/bit_acc"].dtype == float
    assert sorted(back.method) == sorted("'" + t if t[0] in "=+@" else t for t in labels)
    md = (tmp_path / "leaderboard.md").read_text()
    assert "<script>" not in md and "&lt;script&gt;" in md and "\\|" in md


# ---- 8. small errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("args,words", [(["method=nosuch"], ["method=nosuch names no config", "watermarkdm"]),
                                        (["attack.lr=abc"], ["attack.lr must be a number", "abc"])])
def test_small_errors_name_the_option_and_exit_2(tmp_path, args, words):
    proc = bench_cli([*MICRO, *args, "-m"], tmp_path, tmp_path / "cache", timeout=300, fork=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    one_paragraph(proc.stderr, *words)
