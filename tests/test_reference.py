"""The committed tiny-world reference results (results/reference/) are what their records aggregate to."""
from __future__ import annotations

import json
import os
import shutil
import sys

import pandas as pd

from bench.analysis.leaderboard import write_leaderboard
from tests.helpers import ROOT

REF = ROOT / "results" / "reference"


def test_reaggregating_the_reference_records_reproduces_the_committed_tables(tmp_path):
    records = sorted((REF / "records").glob("*/record.json"))
    assert len(records) >= 30, "results/reference/records holds the five-seed tiny-world sweep"
    shutil.copytree(REF / "records", tmp_path / "records")
    for i, path in enumerate(sorted((tmp_path / "records").glob("*/record.json"), reverse=True)):
        os.utime(path, (1e9 + i, 1e9 + i))  # files' ages in an order a fresh clone may give: the tables must not care
    pooled = json.loads((REF / "leaderboard_meta.json").read_text()).get("pooled_world_builds", False)
    write_leaderboard(tmp_path, allow_mixed_builds=pooled)  # a reference that pools builds says so in its meta
    new, old = pd.read_csv(tmp_path / "leaderboard.csv"), pd.read_csv(REF / "leaderboard.csv")
    assert list(new.columns) == list(old.columns)
    pd.testing.assert_frame_equal(new.drop(columns=["error"], errors="ignore"),
                                  old.drop(columns=["error"], errors="ignore"), check_exact=False, rtol=1e-9)
    assert (tmp_path / "survival.md").read_text() == (REF / "survival.md").read_text()
    assert (tmp_path / "leaderboard.md").read_text() == (REF / "leaderboard.md").read_text()
    assert json.loads((tmp_path / "leaderboard_meta.json").read_text()) == json.loads(
        (REF / "leaderboard_meta.json").read_text())
    # the strength-against-utility figures are the leaderboard's, one per method the records hold
    assert {p.name for p in tmp_path.glob("tradeoff_*.png")} == {p.name for p in REF.glob("tradeoff_*.png")}


def _readme_tables():
    sys.path.insert(0, str(ROOT / "scripts"))
    import readme_tables

    return readme_tables


def test_the_results_report_is_what_the_committed_records_give():
    """results/reference/README.md is exactly what scripts/readme_tables.py writes from results/reference: every
    figure in it is computed from the committed records, the ROC snapshot's CSVs and the shipped world's manifest."""
    readme_tables = _readme_tables()
    assert (REF / "README.md").read_text() == readme_tables.report(REF), \
        "results/reference/README.md is stale: run .venv/bin/python scripts/readme_tables.py --write"


def test_the_readme_summary_is_what_the_committed_records_give():
    """README.md's block between the markers is scripts/readme_tables.py's summary of results/reference, and it
    links to the report."""
    readme_tables = _readme_tables()
    readme = (ROOT / "README.md").read_text()
    assert readme.count(readme_tables.BEGIN) == 1 and readme.count(readme_tables.END) == 1
    assert readme_tables.regenerate(readme, REF) == readme, \
        "README.md's results block is stale: run .venv/bin/python scripts/readme_tables.py --write"
    block = readme.split(readme_tables.BEGIN, 1)[1].split(readme_tables.END, 1)[0]
    assert f"]({readme_tables.REPORT})" in block and (ROOT / readme_tables.REPORT).is_file()


def test_activemark_calibration_is_what_its_committed_verifications_give(tmp_path):
    """results/reference/activemark_calibration: the fit, the before/after table and the YAML's query_p0/query_rho are
    re-derived from the committed per-pair verifications (scripts/calibrate_activemark.py --no-run --check)."""
    import subprocess
    ref = ROOT / "results" / "reference" / "activemark_calibration"
    shutil.copytree(ref, tmp_path / "cal")
    (tmp_path / "cal" / "calibration.md").unlink()
    proc = subprocess.run([sys.executable, "scripts/calibrate_activemark.py", "--no-run", "--check", "--out",
                           str(tmp_path / "cal")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (tmp_path / "cal" / "calibration.md").read_text() == (ref / "calibration.md").read_text()
    assert json.loads((tmp_path / "cal" / "calibration.json").read_text()) == json.loads(
        (ref / "calibration.json").read_text())


def test_the_roc_tables_are_what_the_committed_verifications_give(tmp_path):
    """results/reference/roc: roc_summary and fpr_by_null_kind are re-derived from the committed per-method
    verification rows (`python -m bench.tools.roc --tables-only`: no model is loaded)."""
    import subprocess
    ref = ROOT / "results" / "reference" / "roc"
    shutil.copytree(ref, tmp_path / "roc")
    tables = ["roc_summary.csv", "roc_summary.md", "fpr_by_null_kind.csv", "fpr_by_null_kind.md"]
    for name in tables:
        (tmp_path / "roc" / name).unlink()
    proc = subprocess.run([sys.executable, "-m", "bench.tools.roc", str(tmp_path), "--tables-only"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in tables:
        assert (tmp_path / "roc" / name).read_text() == (ref / name).read_text(), name
    assert {p.name for p in (tmp_path / "roc").glob("roc_tiny_*.png")} == {p.name for p in ref.glob("roc_tiny_*.png")}


def test_the_build_paragraph_names_one_shipped_build_and_the_suites_coverage():
    """The reference page says which build its records ran on: the shipped world alone (then how many of the
    suite's method x attack x 5 seeds runs are in, counted by hand here) or, with any other build, that they predate
    it; a record not known to be clean is never called clean."""
    from types import SimpleNamespace

    from bench.world import shipped

    readme_tables = _readme_tables()
    fp = shipped.manifest()["fingerprint"]
    n_methods = len(list((ROOT / "conf" / "method").glob("*.yaml")))
    n_attacks = len([p for p in (ROOT / "conf" / "attack").glob("*.yaml") if p.stem != "none"])

    def rec(method, attack, seed, world=fp, dirty=False, metrics="default"):
        labels = {"model": "tiny", "data": "tiny", "method": method, "attack": attack, "metrics": metrics}
        return {"status": "complete", "method": method, "attack": attack, "seed": seed, "identity": {"labels": labels},
                "provenance": {"world_fingerprint": world, "git_commit": "abc", "git_dirty": dirty}}

    records = [rec("aiao", "full_ft", s) for s in range(5)] + [rec("roma", "lora_ft", 0), rec("roma", "lora_ft", 0),
                                                               rec("roma", "lora_ft", 7),  # not a suite seed
                                                               rec("roma", "full_ft", 1, metrics="verification")]
    ref = SimpleNamespace(records=records, meta={"mixed_world_builds": [], "n_rows": 3})
    text = readme_tables.world_paragraph(ref)
    total = n_methods * n_attacks * 5
    assert f"`{fp}`" in text and f"**6 of its {total} runs**" in text and "from clean trees at 1 commit " in text
    assert f"{n_methods} methods × {n_attacks} attacks × 5 seeds" in text and "still running" in text
    ref.records = records + [rec("aiao", "lora_ft", 0, dirty=None)]
    assert "1 record from a tree not known to be clean" in readme_tables.world_paragraph(ref)
    ref.records = records + [rec("aiao", "lora_ft", 0, world=None)]
    assert readme_tables.world_paragraph(ref).startswith("**These records predate the shipped world:**")


def test_a_search_weaker_than_the_hand_set_attack_says_so_at_a_glance(tmp_path):
    """The at-a-glance column of a search's best names the family's hand-set attack when that removed the mark within
    budget in more seeds, and stays silent when it did not."""
    from types import SimpleNamespace

    readme_tables = _readme_tables()
    (tmp_path / "search" / "roma-full_ft-s0").mkdir(parents=True)
    (tmp_path / "search" / "roma-full_ft-s0" / "best.json").write_text(json.dumps(
        {"export": "conf/attack/full_ft_worst_roma.yaml", "n_trials": 12}))

    def row(n_marked, useful, anywhere):
        return pd.Series({"n_seeds": 5, "removal/n_marked": n_marked, "removal_useful/n_removed": useful,
                          "removal/n_removed": anywhere})

    def table(handset):
        rows = {("roma", "full_ft"): handset, ("roma", "full_ft_worst_roma"): row(5, 0, 0)}
        df = pd.DataFrame([{"method": m, "attack": a} for m, a in rows])
        return readme_tables.overview(SimpleNamespace(folder=tmp_path, df=df, records=[],
                                                      row=lambda m, a: rows.get((m, a))))

    stronger = table(row(5, 3, 5)).splitlines()[-1]
    assert stronger.endswith("| `full_ft` (N=12): survives 5/5; weaker than the hand-set `full_ft`, which removed 3/5 "
                             "in budget |")
    assert table(row(5, 0, 4)).splitlines()[-1].endswith("| `full_ft` (N=12): survives 5/5 |")
    assert table(row(5, 3, 5)).splitlines()[0] == "| attack | checkpoints at | roma |"
    assert table(row(5, 3, 5)).splitlines()[-1].startswith("| best found by search (N trials) |")


def test_the_roc_section_says_whether_it_measured_the_records_own_models():
    """A ROC measured on other models (an earlier build, other seeds) is flagged; the committed one is the records'."""
    from types import SimpleNamespace

    readme_tables = _readme_tables()
    # the committed page: read the addresses from the files themselves, not through readme_tables
    ours = {json.loads(p.read_text())["models"]["watermarked"]["address"] for p in (REF / "records").glob("*/record.json")}
    theirs = set()
    for csv in (REF / "roc").glob("tiny_*.csv"):
        df = pd.read_csv(csv)
        theirs |= set(df[df.role == "watermarked"].model)
    said = readme_tables.roc_models(readme_tables.Reference(REF))
    if theirs <= ours:
        assert said.startswith("The ROC's keys are the records' own") and f"all {len(theirs)} " in said
    else:
        assert said.startswith("**This ROC describes other models") and f"{len(theirs - ours)} of the " in said
    records = [{"models": {"watermarked": {"address": a}}} for a in ("aa", "bb")]
    scores = {"roma": pd.DataFrame({"role": ["watermarked", "watermarked", "cross:watermarked"],
                                    "model": ["aa", "cc", "bb"]})}
    text = readme_tables.roc_models(SimpleNamespace(records=records, scores=scores))
    assert text.startswith("**This ROC describes other models") and "1 of the 2 watermarked models" in text


def test_what_is_missing_names_the_suites_cells_without_a_row_and_the_rows_under_five_seeds():
    from types import SimpleNamespace

    readme_tables = _readme_tables()
    sys.path.insert(0, str(ROOT / "scripts"))
    from suite_cost import suite

    methods, attacks = suite(ROOT / "conf")
    full = pd.DataFrame([{"method": m, "attack": a, "n_seeds": 5} for m in methods for a in attacks])
    done = readme_tables.missing(SimpleNamespace(df=full))
    assert done.startswith(f"**Complete:** every method × attack of the suite ({len(methods)} × {len(attacks)})")
    part = full[~((full.method == "none") | ((full.method == "roma") & (full.attack == "merge")))].copy()
    part.loc[(part.method == "aiao") & (part.attack == "noise"), "n_seeds"] = 3
    text = readme_tables.missing(SimpleNamespace(df=part))
    assert f"No row for none × all {len(attacks)} attacks; roma × `merge`." in text
    assert "Under five seeds: aiao × noise (has 3)." in text


def test_paired_ratios_are_taken_only_where_the_checkpoints_are_training_steps():
    """RoMa's claim is about steps to removal: a merge coefficient or a sparsity is not one (budget_unit reads the
    records' own budget_label)."""
    readme_tables = _readme_tables()

    def rec(attack, label):
        return {"method": "roma", "attack": attack, "curves": {"robustness": [{"budget_label": label}]}}

    records = [rec("merge", "merge coefficient"), rec("full_ft", "step"), rec("prune", "sparsity")]
    assert [readme_tables.budget_unit(records, a) for a in ("merge", "full_ft", "prune", "lora_ft")] == [
        "merge coefficient", "step", "sparsity", "step"]
    ref = readme_tables.Reference(REF)
    assert ref.ratios and all(readme_tables.budget_unit(ref.records, a) == "step" for a in ref.ratios)
