"""The leaderboard: one row per configuration (never per class name), statistics over seeds computed the
way the docs say (t intervals, Clopper-Pearson, Fisher, interval-censored removal), failed runs kept, bad input
refused."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pandas as pd
import pytest
from scipy import stats

from bench.analysis.aggregate import clopper_pearson, t_interval, table
from bench.errors import BenchError, ConfigError
from bench.identity import plan
from bench.analysis.leaderboard import write_leaderboard
from bench.record import write_record
from tests.helpers import MICRO, ROOT, compose_cfg

CHOICES = {"model": "micro", "data": "micro", "method": "roma", "attack": "full_ft", "metrics": "default"}


def planned(overrides: list[str], **choices) -> dict:
    """The identity plan of the real config with `overrides` (no run)."""
    cfg = compose_cfg([*MICRO, f"method={choices.get('method', 'roma')}",
                       f"attack={choices.get('attack', 'full_ft')}", *overrides])
    return plan(cfg, {**CHOICES, **choices}, [])


def record_from(p: dict, status: str = "complete", upper=None, lower=0, bit_acc=0.5, p_value=0.01,
                detected=True, curve_budgets=(0, 10, 20)) -> dict:
    """A record as the runner writes it, with hand-chosen metric values."""
    rec = {"run_id": p["run_id"], "seed": p["seed"], "status": status, "identity": p["identity"],
           "versions": p["versions"], "config": p["config"], **{k: p["names"][k] for k in ("model", "method", "attack")}}
    if status != "complete":
        return rec | {"error": "RuntimeError: out of memory"}
    m = {"verify/attacked/bit_acc": bit_acc, "verify/watermarked/p_value": p_value,
         "verify/watermarked/detected": detected, "removal/lower": lower if upper is not None else curve_budgets[-1],
         "removal/upper": upper, "removal/event": upper is not None, "steps_to_removal": upper,
         "removal_budget": upper, "survived_attack": upper is None}
    rec["metrics"] = {k: {"value": v, "higher_is_better": True} for k, v in m.items()}
    rec["curves"] = {"robustness": [{"step": b, "budget": b, "budget_label": "step", "bit_acc": bit_acc,
                                     "detected": upper is None or b < upper} for b in curve_budgets]}
    return rec


def write(folder, recs) -> None:
    for rec in recs:
        write_record(folder / "records" / rec["run_id"] / "record.json", rec)


def test_variants_and_budgets_are_rows_and_only_seeds_aggregate(tmp_path):
    """Two RoMa radii x two fine-tuning budgets x two seeds: four rows of two seeds, labelled by what differs."""
    recs = [record_from(planned([f"method.r={r}", f"attack.steps={steps}", f"seed={seed}"]), bit_acc=0.5 + seed / 10)
            for r in (0.05, 1.0) for steps in (2, 3) for seed in (0, 1)]
    assert len({r["run_id"] for r in recs}) == 8 and len({r["identity"]["group"] for r in recs}) == 4
    write(tmp_path, recs)
    df = write_leaderboard(tmp_path)
    assert len(df) == 4 and set(df.n_seeds) == {2}
    assert set(df.method) == {"roma", "roma[r=1]"}
    assert set(df.attack) == {"full_ft[steps=2]", "full_ft[steps=3]"}
    assert all(abs(v - 0.55) < 1e-9 for v in df["verify/attacked/bit_acc"])
    # another model seed or data size is another row too, never another "seed"
    other = record_from(planned(["model.seed=1", "seed=0"]))
    assert other["identity"]["labels"]["model"] == "micro[seed=1]"
    assert other["identity"]["group"] not in {r["identity"]["group"] for r in recs}


def test_rows_mixing_world_builds_are_refused_unless_pooling_is_asked_for(tmp_path):
    """Seeds of one row run on two builds of the same world config (two fingerprints, or a fingerprint and an
    unrecorded one): the leaderboard refuses the folder, naming the row and its seeds per build, and writes
    nothing; --allow-mixed-builds pools them and the tables say so; one build: silent."""
    recs = [record_from(planned([f"seed={s}"])) for s in range(3)]
    row = "micro / micro / roma / full_ft / default"
    for rec in recs:
        rec["provenance"] = {"world_fingerprint": "aaaa"}
    write(tmp_path / "same", recs)
    write_leaderboard(tmp_path / "same")
    meta = json.loads((tmp_path / "same" / "leaderboard_meta.json").read_text())
    assert meta["mixed_world_builds"] == [] and meta["world_builds"] == {} and meta["pooled_world_builds"] is False
    assert not (tmp_path / "same" / "leaderboard.md").read_text().startswith("**Pooled")

    for case, last in (("unrecorded", None), ("two", "bbbb")):
        recs[2]["provenance"]["world_fingerprint"] = last
        folder = tmp_path / case
        write(folder, recs)
        with pytest.raises(BenchError) as err:
            write_leaderboard(folder)
        other = last or "unrecorded"
        assert f"{row}: seeds 0 1 on aaaa, seeds 2 on {other}" in str(err.value)
        assert "--allow-mixed-builds" in str(err.value)
        assert not any((folder / n).exists() for n in ("leaderboard.csv", "leaderboard.md", "leaderboard_meta.json"))
        cli = subprocess.run([sys.executable, "-m", "bench.tools.leaderboard", str(folder)], capture_output=True, text=True,
                             cwd=ROOT)
        assert cli.returncode == 2 and "different builds of their world" in cli.stderr

        write_leaderboard(folder, allow_mixed_builds=True)
        meta = json.loads((folder / "leaderboard_meta.json").read_text())
        assert meta["mixed_world_builds"] == [row] and meta["pooled_world_builds"] is True
        assert meta["world_builds"] == {row: {"aaaa": [0, 1], other: [2]}}
        for name in ("leaderboard.md", "survival.md"):
            assert (folder / name).read_text().startswith(f"**Pooled world builds** (aggregated with "
                                                          f"--allow-mixed-builds): {row} (")
        df = pd.read_csv(folder / "leaderboard.csv")
        assert list(df.n_seeds) == [3]


def test_tradeoff_figure_draws_each_attack_beside_the_uninformed_noise_line(tmp_path):
    from bench.analysis.aggregate import group_records
    from bench.analysis.plots import plot_tradeoff, tradeoff_lines
    recs = []
    for attack, overrides, ratios, acc in (("full_ft", [], (1.0, 1.05, 1.3), 0.9),
                                           ("noise", ["attack.scales=[0.01,0.1]"], (1.0, 1.5, 4.0), 0.7)):
        for seed in (0, 1):
            rec = record_from(planned([*overrides, f"seed={seed}"], attack=attack), bit_acc=acc + 0.02 * seed)
            rec["curves"]["utility"] = [{"step": b, "owner_loss_ratio": r * (1 + seed)} for b, r in
                                        zip((0, 10, 20), ratios)]
            recs.append(rec)
    paths = plot_tradeoff(recs, tmp_path)
    assert [p.name for p in paths] == ["tradeoff_micro_roma.png"] and paths[0].stat().st_size > 10_000
    by_attack = {k[-1]: v for k, v in group_records(recs, ("method", "attack")).items()}
    lines = {line["attack"].split("[")[0]: line for line in tradeoff_lines(by_attack)}
    assert lines["noise"]["uninformed"] and not lines["full_ft"]["uninformed"]
    assert list(lines["noise"]["x"]) == pytest.approx([1.5, 2.25, 6.0])  # the mean over seeds per checkpoint
    assert list(lines["full_ft"]["y"]) == pytest.approx([0.91] * 3) and lines["noise"]["n"] == 2


def test_figures_keep_one_panel_per_method_across_metrics_sets(tmp_path, monkeypatch):
    """A search's re-run measured without the CLIP score (another metrics set) joins its method's trade-off figure,
    beside the noise line, and keeps a plain robustness file name; an attack measured with two metrics sets (here the
    LMC's points) is two lines of that figure, each named by its metrics set, and two robustness figures."""
    from bench.analysis.plots import _figures, plot_tradeoff
    import bench.analysis.plots as plots
    recs = []
    for attack, overrides in (("noise", []), ("full_ft", []), ("full_ft", ["metrics.lmc.points=3"]),
                              ("lora_ft", ["~metrics.clip_score"])):
        rec = record_from(planned(overrides, attack=attack))
        rec["curves"]["utility"] = [{"step": b, "owner_loss_ratio": 1 + b / 100} for b in (0, 10, 20)]
        recs.append(rec)
    drawn, real = [], plots.tradeoff_lines  # a spy: the real lines are drawn, and their names kept
    monkeypatch.setattr(plots, "tradeoff_lines", lambda by_attack: drawn.append(sorted(by_attack)) or real(by_attack))
    paths = plot_tradeoff(recs, tmp_path)
    assert [p.name for p in paths] == ["tradeoff_micro_roma.png"]
    (names,) = drawn
    assert len(names) == 4 and "noise" in names and "lora_ft" in names
    assert sum(n.startswith("full_ft (") for n in names) == 2  # the two metrics sets, each named
    files = sorted(p.name for p, *_ in _figures(recs, lambda r: True, tmp_path, "robustness"))
    assert "robustness_micro_lora_ft.png" in files and "robustness_micro_noise.png" in files
    assert sum(f.startswith("robustness_micro_") and "full_ft" in f for f in files) == 2 and len(set(files)) == 4


def test_attack_seed_interpolation_does_not_split_seeds():
    """`attack.seed: ${seed}` follows the run's seed: seeds 0 and 1 are one identity, with different run ids."""
    a, b = planned(["seed=0"]), planned(["seed=1"])
    assert a["config"]["attack"]["seed"] == 0 and b["config"]["attack"]["seed"] == 1
    assert a["identity"] == b["identity"] and a["run_id"] != b["run_id"]


def test_intervals_match_hand_computation(tmp_path):
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    mean, sd, lo, hi = t_interval(values)
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)  # t(0.975, 4) s / sqrt(n), s^2 = 2.5
    assert mean == 3.0 and abs(sd - math.sqrt(2.5)) < 1e-12 and abs(lo - (3 - half)) < 1e-9 and abs(hi - (3 + half)) < 1e-9
    assert math.isnan(t_interval([1.0])[2])
    lo, hi = clopper_pearson(0, 20)
    assert lo == 0.0 and abs(hi - (1 - 0.025 ** (1 / 20))) < 1e-9  # the exact upper bound for 0 of n
    # p-values are never averaged: median and Fisher
    ps = [0.01, 0.2, 0.03, 0.5, 0.04]
    recs = [record_from(planned([f"seed={s}"]), p_value=p, detected=p <= 1e-3) for s, p in enumerate(ps)]
    row = table(recs).iloc[0]
    assert row["verify/watermarked/p_value/median"] == 0.04
    fisher = stats.chi2.sf(-2 * sum(math.log(p) for p in ps), 2 * len(ps))
    assert abs(row["verify/watermarked/p_value/fisher"] - fisher) < 1e-12
    assert row["verify/watermarked/p_value/frac_le_target"] == 0.0
    assert row["verify/watermarked/detected"] == 0.0 and row["verify/watermarked/detected/k"] == 0
    assert "verify/watermarked/p_value" not in row.index


def test_removal_is_censored_in_the_table_and_survival_text(tmp_path):
    budgets = (0, 5, 7, 10, 20)
    recs = [record_from(planned([f"seed={s}"]), upper=u, lower=lo, curve_budgets=budgets)
            for s, (u, lo) in enumerate([(5, 0), (7, 5), (7, 5), (10, 7), (None, 0)])]
    write(tmp_path, recs)
    df = write_leaderboard(tmp_path)
    row = df.iloc[0]
    assert row["removal/median"] == 7 and row["removal/n_removed"] == 4
    assert "steps_to_removal" not in df.columns  # a censored time is never averaged
    text = (tmp_path / "survival.md").read_text()
    # interval-censored: the median (3rd of 5) lies in (5, 7]; the order-statistic interval (X(1), X(5)] = (0, inf]
    # covers it with probability 1 - 2 / 32 = 93.75%
    assert "removed in 4/5 seeds, median step in (5, 7] (93.8% CI 0–∞)" in text
    md = (tmp_path / "leaderboard.md").read_text()
    assert "(5, 7] (94% CI 0–∞), 4/5 removed" in md and "↑" in md


def test_failed_runs_and_superseded_versions(tmp_path):
    ok = record_from(planned(["seed=0"]))
    failed = record_from(planned(["seed=1"]), status="failed")
    old = record_from(planned(["seed=2"]))
    old["versions"] = {**old["versions"], "method": "0"}
    old["run_id"] += "-old"
    # a bump that also added a config key: another config hash, the same labels, an older attack version
    bumped = record_from(planned(["seed=3", "attack.lr=2e-5"]))
    bumped["identity"] = {**bumped["identity"], "labels": ok["identity"]["labels"]}  # its own hash, the old labels
    bumped["versions"] = {**ok["versions"], "attack": "0"}
    # written last (and the newest file), yet at older versions: versions decide, not file order
    write(tmp_path, [ok, failed, old, bumped])
    df = write_leaderboard(tmp_path)
    row = df.iloc[0]
    assert len(df) == 1 and row["status"] == "partial" and row["n_seeds"] == 1 and row["n_failed"] == 1
    assert "out of memory" in row["error"] and df.attrs["superseded"] == 2
    assert row["seeds"] == "0"
    assert (tmp_path / "robustness_micro_full_ft.png").stat().st_size > 1000


def test_hand_label_collision_refused(tmp_path):
    a = record_from(planned(["method.label=mine", "method.r=0.05"]))
    b = record_from(planned(["method.label=mine", "method.r=1.0"]))
    assert a["identity"]["labels"]["method"] == "mine"
    write(tmp_path, [a, b])
    with pytest.raises(ConfigError, match="label 'mine' names 2 different method configurations"):
        write_leaderboard(tmp_path)


def test_standalone_command_and_empty_folder(tmp_path):
    write(tmp_path / "full", [record_from(planned(["seed=0"]))])
    out = subprocess.run([sys.executable, "-m", "bench.tools.leaderboard", str(tmp_path / "full")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "roma" in out.stdout
    assert pd.read_csv(tmp_path / "full" / "leaderboard.csv").n_seeds.tolist() == [1]
    (tmp_path / "empty" / "records").mkdir(parents=True)
    for folder in (tmp_path / "empty", tmp_path / "missing"):
        out = subprocess.run([sys.executable, "-m", "bench.tools.leaderboard", str(folder)], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 2 and out.stderr.count("error:") == 1, out.stderr
        assert not (folder / "leaderboard.csv").exists()
    assert "No records" in subprocess.run([sys.executable, "-m", "bench.tools.leaderboard", str(tmp_path / "empty")],
                                          cwd=ROOT, capture_output=True, text=True).stderr


def test_sweep_outcomes_summary_and_exit_status(tmp_path):
    """The launching process adopts its jobs' outcome files: counts, exit status, one line per bad job
    (also when a job left no error text)."""
    from bench.sweep import outcome
    outcome.write_outcome(tmp_path / "0", "complete", "run-a")
    outcome.write_outcome(tmp_path / "1", "failed", "run-b", "")
    outcome.write_outcome(tmp_path / "2", "refused", None, "attack.steps must be at least 1\nmore")
    summary = outcome.adopt_sweep(tmp_path)
    assert summary.splitlines() == ["2 of 3 jobs did not complete:", "  job 1: failed run-b: ",
                                    "  job 2: refused : attack.steps must be at least 1"]
    assert outcome.exit_status() == 2
    outcome.adopt_sweep(tmp_path / "empty")
    assert outcome.exit_status() == 0
