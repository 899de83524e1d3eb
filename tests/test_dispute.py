"""Ownership disputes (bench.tools.dispute, WatermarkMethod.forge): keys forged after the fact, committed keys, collusion."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from bench.stats import summarise
from tests.helpers import SHRINK, bench_cli, run_module

VERIFIABLE = ["watermarkdm", "roma", "sleepermark", "aiao", "activemark"]


def score(method, world, unet, key, seed) -> float:
    s = summarise(method.verify(world, unet, key, 4, seed), 1e-3)
    return s["bit_acc"] if s["bit_acc"] is not None else s["mean_score"]


@pytest.mark.parametrize("name", VERIFIABLE)
def test_each_method_has_a_forger_that_fits_its_key_to_a_model_it_did_not_mark(micro_world, embedded, name):
    """The forger rewrites its own key from the suspect (the base model, never marked by anyone): under the forger's
    own query seed the forged key agrees with the suspect at least as well as the honest key did, and the forger's
    key keeps its form (the same tensors and metadata names, so the verifier reads it)."""
    e = embedded(name)
    own = e.key  # stands for a key of the forger's own: the forger never sees the suspect owner's key
    forged = e.method.forge(micro_world, micro_world.unet, own, 4, 900)
    assert set(forged.tensors) == set(own.tensors) and set(forged.meta) == set(own.meta)
    assert not e.method.key_lacks(forged)
    assert any(not torch.equal(forged.tensors[k], own.tensors[k]) for k in own.tensors)
    assert score(e.method, micro_world, micro_world.unet, forged, 900) >= score(e.method, micro_world,
                                                                                micro_world.unet, own, 900)


@pytest.fixture(scope="module")
def disputed(shared_cache, tmp_path_factory):
    """AIAO at seeds 0 and 1 (attack=none, verification only), then the dispute tool with budgets 1, 2 and collusion of
    the two."""
    results = tmp_path_factory.mktemp("dispute")
    bench_cli(["method=aiao", "attack=none", "metrics=verification", "seed=0,1", "-m", *SHRINK], results, shared_cache,
              check=True)
    proc = run_module("bench.tools.dispute", [str(results), "--budgets", "1,2", "--collusion", "2", "--cache",
                                              str(shared_cache)], timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results, proc


def test_dispute_claims_run_within_the_budget_and_commitment_stops_the_forger(disputed):
    results, proc = disputed
    raw = pd.read_csv(results / "dispute" / "false_claims_raw.csv")
    # three targets (the base model, the two watermarked models), each budget, with and without commitment
    assert sorted(raw.target.unique()) == ["base", "watermarked:s0", "watermarked:s1"]
    assert len(raw) == 3 * 2 * 2 and set(raw.budget) == {1, 2}
    uncommitted, committed = raw[raw.commitment == "uncommitted"], raw[raw.commitment == "committed"]
    # a key read off the model itself verifies on it; keys fixed before the model existed do not
    assert uncommitted.claimed.all() and not committed.claimed.any()
    # a larger budget never makes the best claim weaker
    for kind, part in raw.groupby(["target", "commitment"]):
        p = part.set_index("budget").best_p
        assert p[2] <= p[1], kind
    table = pd.read_csv(results / "dispute" / "false_claims.csv")
    row = table[(table.commitment == "uncommitted") & (table.budget == 1)].iloc[0]
    assert (row.hits, row.n) == (3, 3) and row.ci_low > 0.2 and row.ci_high == 1
    assert (results / "dispute" / "false_claims.md").read_text().count("aiao") == 4


def test_collusion_averages_the_copies_and_verifies_each_owner(disputed):
    results, _ = disputed
    raw = pd.read_csv(results / "dispute" / "collusion_raw.csv")
    assert list(raw.member) == [0, 1] and set(raw.group) == {"0+1"} and set(raw.K) == {2}
    assert raw.owner_loss_ratio.between(0.5, 2).all()
    table = pd.read_csv(results / "dispute" / "collusion.csv")
    assert table.n.tolist() == [2] and table.hits.tolist() == [int(raw.detected.sum())]


@pytest.mark.parametrize("args, words", [
    (["--budgets", "0"], "--budgets must be a comma-separated list of integers >= 1"),
    (["--collusion", "1"], "--collusion must be a comma-separated list of integers >= 2"),
    (["--forger-seed", "0"], "the forger must not hold an owner's key"),
    (["--dual", "aiao,magic"], "--dual names ['magic'], which are not methods in conf/method/"),
])
def test_bad_dispute_settings_are_refused(disputed, shared_cache, args, words):
    results, _ = disputed
    proc = run_module("bench.tools.dispute", [str(results), "--cache", str(shared_cache), *args], timeout=300)
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
def test_dual_claims_are_decided_by_the_owners_earlier_model(disputed, shared_cache):
    """A pirate who embeds their own AIAO key into the owner's model W gets P, on which both marks verify; the pirate's
    key does not verify on W, which the owner shows predates P. (Slow: two pirate embeddings.)"""
    results, _ = disputed
    proc = run_module("bench.tools.dispute", [str(results), "--budgets", "1,2", "--collusion", "2", "--dual", "same",
                                              "--cache", str(shared_cache)], timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    raw = pd.read_csv(results / "dispute" / "dual_claims_raw.csv")
    assert list(raw.owner_seed) == [0, 1] and set(raw.pirate) == {"same"} and list(raw.pirate_seed) == [800, 801]
    assert raw.owner_on_W.all() and raw.pirate_on_P.all() and not raw.pirate_on_W.any()
    table = pd.read_csv(results / "dispute" / "dual_claims.csv")
    assert sorted(table.cell) == ["owner_on_P", "owner_on_W", "pirate_on_P", "pirate_on_W"] and set(table.n) == {2}


def test_the_reference_page_rederives_the_dispute_tables_from_the_raw_rows(disputed, tmp_path):
    """scripts/readme_tables.py renders dispute/ from its *_raw.csv alone: each cell is the raw rows' count."""
    import shutil
    import sys
    from types import SimpleNamespace

    from tests.helpers import ROOT
    sys.path.insert(0, str(ROOT / "scripts"))
    import readme_tables

    results, _ = disputed
    for name in ("false_claims", "collusion"):  # only the raw rows are read, never the tables the tool wrote
        (tmp_path / "dispute").mkdir(exist_ok=True)
        shutil.copy(results / "dispute" / f"{name}_raw.csv", tmp_path / "dispute")
    text = readme_tables.disputes(SimpleNamespace(folder=tmp_path))
    raw = pd.read_csv(results / "dispute" / "false_claims_raw.csv")
    hits = {(c, b): (int(p.claimed.sum()), len(p)) for (c, b), p in raw.groupby(["commitment", "budget"])}
    row = next(line for line in text.splitlines() if line.startswith("| aiao | 3 |"))
    cells = [c.strip() for c in row.strip("|").split("|")][2:]  # uncommitted B=1, B=2, committed B=1, B=2
    expected = [hits["uncommitted", 1], hits["uncommitted", 2], hits["committed", 1], hits["committed", 2]]
    assert [c.split(" ")[0] for c in cells] == [f"{k}/{n}" for k, n in expected] == ["3/3", "3/3", "0/3", "0/3"]
    colluded = pd.read_csv(results / "dispute" / "collusion_raw.csv")
    assert f"| aiao | 2 | {int(colluded.detected.sum())}/2" in text
    # the dual-claim matrix from rows written here: the owner's key lost on P in one of two seeds
    pd.DataFrame([{"model": "micro", "method": "aiao", "n_keys": 2, "owner_seed": s, "pirate": "same",
                   "pirate_seed": 800 + s, "owner_on_W": True, "owner_on_P": s == 0, "pirate_on_W": False,
                   "pirate_on_P": True} for s in (0, 1)]).to_csv(tmp_path / "dispute" / "dual_claims_raw.csv", index=False)
    row = next(line for line in readme_tables.disputes(SimpleNamespace(folder=tmp_path)).splitlines()
               if line.startswith("| aiao | same (aiao) |"))
    cells = [c.strip().split(" ")[0] for c in row.strip("|").split("|")][2:]
    assert cells == ["2/2", "1/2", "2/2", "0/2"]  # owner on W, owner on P, pirate on P, pirate on W
