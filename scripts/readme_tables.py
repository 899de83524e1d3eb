"""The tiny-world results report and the README's summary of it, generated from the committed records.

    .venv/bin/python scripts/readme_tables.py [RESULTS_DIR]   # print the report (default: results/reference/)
    .venv/bin/python scripts/readme_tables.py --write         # write RESULTS_DIR/README.md and README.md's summary

`report()` is the whole of results/reference/README.md: one markdown table per attack (each method's mark
before and after the attack, as bit accuracy or verification rate, mean ± 95% half-width over seeds;
detection k/n; removal as an interval-censored median's bracket with its order-statistic interval; quality
and the attacker's utility), the steps-to-removal ratios of RoMa over WatermarkDM from paired seeds (seed s
of both draws the same key bits; `bench.analysis.survival.paired_ratio`), the survival table, the papers'
claims stated beside the figures they rest on, the ROC / false-positive section (from the CSVs that
`python -m bench.tools.roc` wrote into `roc/`) and the shipped world's figures (from its manifest).
`summary()` is README.md's block between the `<!-- results: begin -->` / `end` markers: the survival
overview and a link to the report. Every figure comes from those files or from the records' configs: no
number is typed. tests/test_reference.py checks that both files are exactly what this writes.
"""
from __future__ import annotations

import copy
import json
import math
import re
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.analysis.aggregate import clopper_pearson, current, identity_of, removal_intervals  # noqa: E402
from bench.analysis.plots import UNINFORMED  # noqa: E402
from bench.analysis.tables import cell  # noqa: E402
from bench.analysis.survival import order_stat_rank, paired_ratio  # noqa: E402
from bench.record import load_records  # noqa: E402

COLUMNS = [("strength", "marked ↑"), ("verify/watermarked/detected", "marked detected"),
           ("attacked_strength", "after attack ↑"), ("verify/attacked/detected", "detected after"),
           ("removal", "removal: median in (low, high], CI (coverage)"), ("false_positives", "false pos. ↓"),
           ("fid/watermarked", "FID marked ↓"), ("fid/attacked", "FID attacked ↓"),
           ("utility/attacked/owner_loss_ratio", "owner loss ×"), ("utility/attacked/attacker_gain", "attacker gain")]


def strength(row: pd.Series, role: str) -> str:
    """Bit accuracy for bit methods, verification rate for the others."""
    bits = row.get(f"verify/{role}/bit_acc")
    name = f"verify/{role}/bit_acc" if bits is not None and not pd.isna(bits) else f"verify/{role}/verification_rate"
    text = cell(row, name)
    return f"{text} ({'bits' if 'bit_acc' in name else 'rate'})" if text else ""


def table(df: pd.DataFrame) -> str:
    lines = ["| method | n | " + " | ".join(t for _, t in COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 2)]
    for _, row in df.sort_values("method").iterrows():
        cells = []
        for name, _ in COLUMNS:
            if name == "strength":
                cells.append(strength(row, "watermarked"))
            elif name == "attacked_strength":
                cells.append(strength(row, "attacked"))
            else:
                cells.append(cell(row, name))
        lines.append(f"| {row['method']} | {int(row['n_seeds'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed(records: list[dict], method: str, attack: str) -> dict:
    """seed -> removal interval of the records of one (method, attack) row with default labels elsewhere."""
    recs = [r for r in records if identity_of(r)["labels"]["method"] == method
            and identity_of(r)["labels"]["attack"] == attack and identity_of(r)["labels"]["metrics"] == "default"]
    intervals = removal_intervals(recs, "removal") if recs else None
    return {} if intervals is None else {r["seed"]: iv for r, iv in zip(recs, intervals)}


def budget_unit(records: list[dict], attack: str) -> str:
    """The unit of an attack's checkpoints in its records (`budget_label`: step, sparsity, merge coefficient, ...)."""
    for r in records:
        if identity_of(r)["labels"]["attack"] == attack and (r.get("curves") or {}).get("robustness"):
            return r["curves"]["robustness"][0].get("budget_label", "step")
    return "step"


# ---- the data every section reads -----------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
REPORT = "results/reference/README.md"  # the generated report, relative to the repository root
BEGIN, END = "<!-- results: begin -->", "<!-- results: end -->"  # README.md's generated summary
PAPER_ROMA_RATIO = 32.83  # RoMa's claim (Xie et al. 2025): at least 32.83x the baseline's steps to removal


class Reference:
    """The committed reference results of one folder: the leaderboard, its meta, the current complete records,
    the paired ratios and the ROC snapshot's CSVs (`roc/`)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.df = pd.read_csv(folder / "leaderboard.csv")
        self.meta = json.loads((folder / "leaderboard_meta.json").read_text())
        self.records, _ = current([r for r in load_records(folder) if r["status"] == "complete"])
        self.ratios = {}  # attack -> paired_ratio of RoMa over WatermarkDM, for attacks whose budget is steps
        for attack in sorted(self.df.attack.unique()):
            if budget_unit(self.records, attack) != "step":
                continue  # a merge coefficient, a sparsity, a noise scale: not the steps RoMa's claim is about
            a, b = per_seed(self.records, "roma", attack), per_seed(self.records, "watermarkdm", attack)
            if not a or not b or not any(iv["event"] for iv in [*a.values(), *b.values()]):
                continue  # no removal time in this row (a budget-free attack, or neither was removed)
            r = paired_ratio(a, b)
            if r["n"]:
                self.ratios[attack] = r
        roc = folder / "roc"
        self.roc = roc.is_dir() and (roc / "roc_summary.csv").is_file()
        if self.roc:
            self.roc_summary = pd.read_csv(roc / "roc_summary.csv")
            self.by_kind = pd.read_csv(roc / "fpr_by_null_kind.csv")
            self.scores = {m: pd.read_csv(p) for p in sorted(roc.glob("*_*.csv"))
                           if (m := p.stem.split("_", 1)[1]) in set(self.roc_summary.method)}
            self.null_models = {p.stem.split("_", 2)[2]: pd.read_csv(p) for p in sorted(roc.glob("null_models_*.csv"))}

    def row(self, method: str, attack: str) -> pd.Series | None:
        rows = self.df[(self.df.method == method) & (self.df.attack == attack)]
        if len(rows) > 1:
            rows = rows[rows.metrics == "default"]
        if len(rows) > 1:
            raise ValueError(f"{len(rows)} rows for {method} x {attack}: name the variant to summarise")
        return None if rows.empty else rows.iloc[0]

    def setting(self, *path: str):
        """The one value a config key takes in every record that has it (a set of values joined by ' / ')."""
        values = []
        for r in self.records:
            x = r.get("config", {})
            for p in path:
                x = x.get(p) if isinstance(x, dict) else None
            if x is not None and x not in values:
                values.append(x)
        return " / ".join(f"{v:g}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
                          for v in values)


def _int(x) -> int | None:
    return None if x is None or pd.isna(x) else int(x)


def _num(x: float) -> str:
    return "∞" if math.isinf(x) else f"{x:.2g}"


def _pct(x: float) -> str:
    """A share as a percentage: two significant digits ('8.3%', '41%'), one decimal from 99% ('99.5%'), '100%' at 1."""
    v = 100 * x
    return "100%" if v >= 100 else f"{v:.1f}%" if v >= 99 else f"{v:.0f}%" if v >= 10 else f"{v:.2g}%"


def detected(ref: Reference, method: str, attack: str) -> str:
    """'k/n': seeds detected after the attack."""
    row = ref.row(method, attack)
    return "no run" if row is None else f"{_int(row['verify/attacked/detected/k'])}/{_int(row['n_seeds'])}"


def after(ref: Reference, method: str, attacks: list[tuple[str, str]]) -> str:
    """'`a` in k/n, `b` in k/n seeds (no run yet: `c`)': detections after each attack (with its note), the attacks
    not run yet named apart rather than read as 'detected in no run'."""
    done = [f"`{a}`{note} in {detected(ref, method, a)}" for a, note in attacks if ref.row(method, a) is not None]
    missing = [f"`{a}`{note}" for a, note in attacks if ref.row(method, a) is None]
    return (", ".join(done) + " seeds" if done else "no attack yet") + (
        f" (no run yet: {', '.join(missing)})" if missing else "")


def removals(row) -> tuple[int | None, int | None, int | None]:
    """(seeds marked before the attack, removed within the utility budget, removed at all) of a leaderboard row."""
    return tuple(_int(row.get(f"{p}/{k}")) for p, k in
                 (("removal", "n_marked"), ("removal_useful", "n_removed"), ("removal", "n_removed")))


def verdict(row: pd.Series | None) -> str:
    """A survival cell of the summary: removals within the utility budget, and any removal, over marked seeds."""
    if row is None:
        return ""
    n = _int(row["n_seeds"])
    marked, useful, anywhere = removals(row)
    if useful is not None and marked:
        return f"survives {marked}/{marked}" if anywhere == 0 else \
            f"removed {useful}/{marked} in budget ({anywhere}/{marked} at all)"
    survived = _int(row.get("survived_attack/k"))
    if survived is None:
        return ""
    return f"survives {n}/{n}" if survived == n else f"removed {n - survived}/{n}"


WORST = re.compile(r"^(?P<family>.+)_worst_(?P<method>.+)$")  # bench.tools.search's exported attacks


def search_budgets(ref: Reference) -> dict[str, int]:
    """Exported attack name -> the N trials of the search that found it (search/*/best.json)."""
    out = {}
    for path in sorted((ref.folder / "search").glob("*/best.json")):
        best = json.loads(path.read_text())
        if best.get("export"):
            out[Path(best["export"]).stem] = best["n_trials"]
    return out


def overview(ref: Reference) -> str:
    """Attacks x methods: does the mark survive? (the summary table of both files). One row per attack, the training
    attacks (checkpoints at optimiser steps) first, then those whose checkpoints are values of another budget (weight
    edits, chains), each with that unit. Attacks exported by `bench.tools.search` (`<family>_worst_<method>`) share
    one last row: each method's worst case per family, with the search's N, beside the hand-set defaults."""
    worst = sorted(a for a in ref.df.attack.unique() if WORST.match(a))
    units = {a: budget_unit(ref.records, a) for a in ref.df.attack.unique() if a != "none" and a not in worst}
    attacks = sorted(units, key=lambda a: (units[a] != "step", a))
    methods = sorted(m for m in ref.df.method.unique() if m != "none")
    lines = ["| attack | checkpoints at | " + " | ".join(methods) + " |", "|---" * (len(methods) + 2) + "|"]
    for a in attacks:
        unit = "each link's budget" if ":" in units[a] else units[a]
        lines.append(f"| `{a}` | {unit} | " + " | ".join(verdict(ref.row(m, a)) for m in methods) + " |")
    if worst:
        budgets = search_budgets(ref)
        cells = ["; ".join(searched(ref, m, a, budgets) for a in worst
                           if WORST.match(a)["method"] == m and ref.row(m, a) is not None) for m in methods]
        lines.append("| best found by search (N trials) | its family's | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def searched(ref: Reference, method: str, attack: str, budgets: dict[str, int]) -> str:
    """One search's cell: its best configuration's fresh-seed verdict, and the family's hand-set attack where that
    removed the mark within budget in more seeds (a search of N trials judged at one checkpoint can find less than the
    suite's run, judged at the first undetected checkpoint within budget: the hand-set one is then the worst case)."""
    family = WORST.match(attack)["family"]
    cell = f"`{family}` (N={budgets.get(attack, '?')}): {verdict(ref.row(method, attack))}"
    hand = ref.row(method, family)
    if hand is not None:
        (_, best, _), (marked, handset, _) = removals(ref.row(method, attack)), removals(hand)
        if handset is not None and handset > (best or 0):
            cell += f"; weaker than the hand-set `{family}`, which removed {handset}/{marked} in budget"
    return cell


def builds(ref: Reference) -> str:
    """How many world builds the records ran on, and how many rows pool seeds from more than one."""
    prints = fingerprints(ref)
    named = len(prints - {None})
    older = " and builds older than the fingerprint" if None in prints else ""
    mixed = len(ref.meta.get("mixed_world_builds", []))
    return (f"{len(ref.records)} records, run on {named} fingerprinted build{'s' * (named != 1)} of the tiny world"
            f"{older}; {mixed} of {ref.meta['n_rows']} rows pool seeds from more than one build")


def suite_coverage(ref: Reference) -> tuple[int, int, int, int]:
    """(runs done, runs in the suite, methods, attacks): distinct (method, attack, seed) among the records that are
    cells of the tiny suite (`suite_cost.suite_cell`), against every conf/method/ x conf/attack/ (but none) x 5 seeds,
    as its glob runs."""
    from suite_cost import suite, suite_cell

    methods, attacks = suite(ROOT / "conf")
    done = {(r["method"], r["attack"], r["seed"]) for r in ref.records if suite_cell(r, methods, attacks, 5)}
    return len(done), len(methods) * len(attacks) * 5, len(methods), len(attacks)


def fingerprints(ref: Reference) -> set:
    """The world builds the records ran on (None for a record that did not say)."""
    return {(r.get("provenance") or {}).get("world_fingerprint") for r in ref.records}


def on_shipped(ref: Reference) -> bool:
    """Whether every record ran on the shipped world's build."""
    from bench.world import shipped

    return fingerprints(ref) == {shipped.manifest()["fingerprint"]}


def world_paragraph(ref: Reference) -> str:
    """Which world build the records ran on: the shipped one alone (then how much of the suite is done), or not."""
    prints = fingerprints(ref)
    if not on_shipped(ref):
        return (f"**These records predate the shipped world:** {builds(ref)}. The tables name those rows "
                "(`mixed_world_builds` in\n`leaderboard_meta.json`), and aggregation refuses such rows unless asked "
                "(`--allow-mixed-builds`). The re-run\nof every method × attack × 5 seeds on the shipped build "
                "(`bench/world/tiny_world/`) is open work.")
    done, total, n_methods, n_attacks = suite_coverage(ref)
    commits = len({(r.get("provenance") or {}).get("git_commit") for r in ref.records})
    dirty = sum((r.get("provenance") or {}).get("git_dirty") is not False for r in ref.records)
    trees = f"from clean trees at {commits} commit{'s' * (commits != 1)}" if not dirty else \
        f"at {commits} commit{'s' * (commits != 1)}, {dirty} record{'s' * (dirty != 1)} from a tree not known to be clean"
    return (f"**One build:** all {len(ref.records)} records ran on the shipped world (`bench/world/tiny_world/`, "
            f"fingerprint `{next(iter(prints))}`), {trees} "
            f"(each record names its own). The five-seed suite (`bash scripts/tiny_seeds.sh`: {n_methods} methods × "
            f"{n_attacks} attacks × 5 seeds) has **{done} of its {total} runs** here"
            + (": a row with fewer than five seeds is still running."
               if done < total else "."))


def summary(ref: Reference) -> str:
    """README.md's block: the survival overview and a link to the report."""
    return (f"The committed tiny-world reference results. {world_paragraph(ref)} A cell counts the seeds in which the "
            "attack removed the mark while the attacker's model stayed within its utility budget at that checkpoint "
            "(and at all); blank: not run. The training attacks come first (their checkpoints are optimiser steps), "
            "then the attacks whose checkpoints are values of another budget.\n\n"
            f"{overview(ref)}\n\n"
            f"Every table with its intervals, the survival and ROC figures, and the papers' claims read against "
            f"them: **[{REPORT}]({REPORT})**.\n")


# ---- the report -----------------------------------------------------------------------------------------------

def render_world() -> str:
    """The shipped tiny world's figures, from its manifest."""
    from bench.world import shipped

    man = shipped.manifest()
    q, b, w = man["quality"], man["build"], man["built_with"]
    weakest = min(q["per_class_fidelity"].items(), key=lambda kv: kv[1])
    size = sum(f["size"] for f in man["files"].values())
    rows = [("fingerprint", f"`{man['fingerprint']}`"),
            ("size in the package", f"{size / 1e6:.1f} MB"),
            ("build", f"{b['seconds']:.0f} s on {w['threads']} thread(s), torch {w['torch']}"),
            ("final losses (CLIP / VAE reconstruction MSE / UNet)",
             f"{b['clip_loss']:.3f} / {b['vae_rec_mse']:.4f} / {b['unet_loss']:.4f}"),
            (f"prompt fidelity ({q['prompt_fidelity_n']} images)",
             f"{q['prompt_fidelity']:.1%} (chance 10%; weakest class \"{weakest[0]}\", {weakest[1]:.0%})"),
            (f"FID, {q['fid_n']:,} generated vs {q['fid_n']:,} held-out Fashion-MNIST", f"{q['fid_generated_vs_holdout']:.1f}"),
            (f"FID, {q['fid_n']:,} real MNIST vs the same images (for scale)", f"{q['fid_attacker_data_vs_holdout']:.1f}")]
    return "| figure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"


def render(folder: Path, ref: Reference | None = None) -> str:
    """The tables: one per attack, the paired ratios and the survival table."""
    ref = ref or Reference(folder)
    out = []
    for attack, rows in ref.df.groupby("attack", sort=True):
        out.append(f"**{attack}**\n\n{table(rows)}\n")
    out.append("**RoMa / WatermarkDM steps-to-removal, paired by seed** (median per-seed ratio in (low, high], "
               "order-statistic interval with its exact coverage; the attacks whose checkpoints are training steps)\n")
    out.append("\n".join(f"* {attack}: in ({_num(r['median_low'])}, {_num(r['median_high'])}]× over {r['n']} paired "
                         f"seeds ({r['coverage']:.1%} CI {_num(r['ci_low'])}–{_num(r['ci_high'])})"
                         for attack, r in ref.ratios.items()) + "\n")
    out.append("**Survival** (`survival.md`): removal within the utility budget at the removal checkpoint, and any "
               "removal\n\n" + (folder / "survival.md").read_text())
    return "\n".join(out)


def claims(ref: Reference) -> str:
    """The papers' claims, each stated beside the figures of these records it rests on."""
    def m(method, attack, col):
        row = ref.row(method, attack)
        return None if row is None or pd.isna(row.get(col)) else row[col]

    def budget(method, attack):
        row = ref.row(method, attack)
        return "no run" if row is None else verdict(row)

    def useful(method, attack):
        k = m(method, attack, "utility/attacked/useful/k")
        return "no run" if k is None else f"{_int(k)}/{_int(m(method, attack, 'n_seeds'))} seeds"

    ratio = m("aiao", "permute", "utility/attacked/owner_loss_ratio")
    permute = ("`permute`, which keeps the model's function, has no run yet" if ratio is None else
               f"`permute`, which keeps the model's function (owner loss ×{ratio:.2f}), leaves it detected in "
               f"{detected(ref, 'aiao', 'permute')}: the verifier reads fixed coordinates")

    out = ["**The papers' claims, read against these records** (each names the cells it rests on):\n"]
    out.append(
        f"* **AIAO: above 90% verification after fine-tuning, against about 70% for the trigger baseline.** AIAO is "
        f"detected after `full_ft` in {detected(ref, 'aiao', 'full_ft')} seeds and after `lora_ft` in "
        f"{detected(ref, 'aiao', 'lora_ft')}; WatermarkDM in {detected(ref, 'watermarkdm', 'full_ft')} and "
        f"{detected(ref, 'watermarkdm', 'lora_ft')}. AIAO's attacked model is within the utility budget at the last "
        f"checkpoint in {useful('aiao', 'full_ft')} (`full_ft`) and {useful('aiao', 'lora_ft')} (`lora_ft`), "
        f"and {permute}. It is detected after " + after(ref, "aiao", [
            ("lazy_ft", " (the fine-tune aimed at its lazy layers)"), ("partial_ft", "")]) + ".")
    r = ref.setting("method", "r")  # RoMa's radius (only RoMa's config has one)
    excluded = [a for a, x in ref.ratios.items() if x["ci_high"] < PAPER_ROMA_RATIO]
    kept = [a for a in ref.ratios if a not in excluded]
    names = lambda attacks: ", ".join(f"`{a}`" for a in attacks)  # noqa: E731
    if not ref.ratios:
        found = "No attack has removal times of both RoMa and WatermarkDM at shared seeds in these records yet"
    else:
        found = "; ".join(part for part in (
            f"the paired per-seed ratios' intervals (above) exclude {PAPER_ROMA_RATIO}× under {names(excluded)}"
            if excluded else f"no attack's paired per-seed ratio interval (above) excludes {PAPER_ROMA_RATIO}×",
            f"the interval{'s' * (len(kept) > 1)} under {names(kept)} include{'s' * (len(kept) == 1)} it" if kept
            else "") if part)
        found = found[0].upper() + found[1:]
    out.append(
        f"* **RoMa: at least {PAPER_ROMA_RATIO}× the baseline's steps to removal.** {found}"
        f"{f' (the records: r = {r})' if r else ''}. docs/methods.md explains why the "
        f"paper's radius barely changes the gradient at this scale.")
    lower = m("sleepermark", "trigger_ft", "verify/attacked/p_lower/fisher")
    inverted = (f"; after `trigger_ft` its attacked models' voted bits are anti-correlated with the key (lower-tail "
                f"Fisher p {lower:.2g}): the mark is inverted rather than erased" if lower is not None and lower <= 1e-3
                else "")
    out.append(
        f"* **SleeperMark: survives LoRA fine-tuning.** Under `lora_ft`: {budget('sleepermark', 'lora_ft')}; under "
        f"`full_ft`: {budget('sleepermark', 'full_ft')}{inverted}.")
    out.append(
        "* **The black-box marks against `trigger_ft`**, which knows their public trigger form: "
        + "; ".join(f"{x} {budget(x, 'trigger_ft')}" for x in ("watermarkdm", "roma", "sleepermark")) + ".")
    out.append(
        "* **ActiveMark** is detected after " + after(ref, "activemark", [
            ("full_ft", ""), ("lora_ft", ""), ("expressive_ft", " (the fine-tune aimed at it)"), ("permute", "")]) +
        ". Whether its verdict identifies the owner: the ROC section below.")
    fired = ref.df[ref.df["false_positives"].fillna(0) > 0]
    out.append(
        "* **False positives on the runs' own nulls** (the base model, and the base model after the same attack): "
        + ("none in any row (the `false pos.` cells); with five seeds that bounds the rate only, and the ROC "
           "section below measures it on models that never saw the key." if fired.empty else
           "in " + ", ".join(f"{r.method} × {r.attack}" for r in fired.itertuples()) + " (the `false pos.` cells)."))
    return "\n".join(out) + "\n"


# Why a per-query test's match rate on another owner's marked model can exceed its p0 (prose, no figures)
WHY_ABOVE = {
    "activemark": "the embedding teaches the network to carry *an* injected message to the decoder, and any "
                  "owner's encoder and decoder can use that channel",
    "aiao": "its exact test assumes the secret direction is independent of the model, which a model trained on "
            "another AIAO key does not quite give",
}


def _sci(x: float) -> str:
    """1e-3, not 0.001 (as the verdicts print it)."""
    mantissa, exponent = f"{x:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _fired(k: int, n: int) -> str:
    """'0/82 (≤ 4.4%)' or '6/28 (21%, 8.3–41%)': k of n with the exact 95% interval."""
    low, high = clopper_pearson(k, n)
    return f"{k:,}/{n:,} (≤ {_pct(high)})" if k == 0 else f"{k:,}/{n:,} ({_pct(k / n)}, {_pct(low)}–{_pct(high)})"


def roc_keys(ref: Reference) -> tuple[set[str], set[str]]:
    """(the records' watermarked models, the ROC's keys' watermarked models), by address (the CSVs name them)."""
    return ({r["models"]["watermarked"]["address"] for r in ref.records},
            {a for df in ref.scores.values() for a in df[df.role == "watermarked"].model})


def roc_models(ref: Reference) -> str:
    """Whether the ROC measured the records' own models: its keys' watermarked models against the records' (a ROC
    from another build or other seeds would describe other models)."""
    ours, theirs = roc_keys(ref)
    if theirs <= ours:
        return (f"The ROC's keys are the records' own: all {len(theirs)} watermarked models it verified are the "
                "records' watermarked models.")
    return (f"**This ROC describes other models than the records above:** {len(theirs - ours)} of the "
            f"{len(theirs)} watermarked models in `roc/` are not the records' (it was measured on an earlier build or "
            "other seeds). `python -m bench.tools.roc results` on the records' results folder measures it again.")


def roc_attacks(ref: Reference) -> tuple[list[str], list[str]]:
    """(the attacks whose final checkpoints the ROC verified, the records' other attacks): from roc_summary's
    `attacks` column (the records' attacks where the column predates `--attack`). Where the ROC measured other
    models than the records' (roc_models), the records' attacks say nothing about it: no attack is 'left out'."""
    ran = sorted({r["identity"]["labels"]["attack"] for r in ref.records if len(r["models"]["checkpoints"]) > 1})
    if "attacks" not in ref.roc_summary:
        return ran, []
    measured = sorted({a for cell in ref.roc_summary.attacks.dropna() for a in str(cell).split(", ") if a != "none"})
    ours, theirs = roc_keys(ref)
    if not theirs <= ours:
        return measured, []
    return measured, [a for a in ran if a not in measured]


def roc(ref: Reference) -> str:
    """The ROC / false-positive section, from the committed CSVs of `python -m bench.tools.roc`."""
    if not ref.roc:
        return ""
    kinds = ref.by_kind
    unmarked = ("base", "independent", "other-world")
    first = next(iter(ref.scores.values()))
    n_indep, n_other = (first[first.role == k].model.nunique() for k in ("independent", "other-world"))
    n_keys = int(kinds.n_keys.max())
    measured, left = roc_attacks(ref)
    flags = "".join(f" --attack {a}" for a in measured) if left else ""
    lines = [
        "## False positives and ROC on models that never saw the key\n",
        f"From `roc/`, the output of `python -m bench.tools.roc results --independent {n_indep} "
        f"--other-worlds {n_other}{flags}` on the records' models (a snapshot: its null models live in a cache, not in "
        "records, so no test recomputes these CSVs; this section is generated from them). "
        f"{n_keys} keys per method (the seeds' embeddings). Each key is verified on:",
        f"* its own watermarked model and its final checkpoint after each of {len(measured)} attacks "
        f"({', '.join(f'`{a}`' for a in measured)}) (the positives)"
        + (f"; the records' other {len(left)} attacks ({', '.join(f'`{a}`' for a in left)}) are left out: their "
           "checkpoints were not in the measuring machine's cache (`--attack`)" if left else "") + ";",
        "* the other keys' marked models and their attacked models (**cross-key**: marked, by another owner);",
        f"* {n_indep} UNets trained from scratch on the world's data with other initialisations, each also after "
        f"`full_ft` and `distill` (final and halfway checkpoints), and {n_other} world{'s' * (n_other != 1)} "
        "rebuilt with another `model.seed`, with the same models (**independent** and **other-world**: nobody "
        "marked them);",
        "* the base model and the base model after each attack.\n",
        roc_models(ref) + "\n",
    ]
    for world, nm in ref.null_models.items():
        figures = "; ".join(f"{r.role} {r.owner_loss:.3f} / {r.fid:.0f}" for r in nm.itertuples())
        lines.append(f"The null models (`roc/null_models_{world}.md`: owner-domain held-out loss / FID): {figures} "
                     "(other worlds have their own VAE and CLIP, so their loss is on their own latents).\n")
    lines += ["| method | nulls | AUC | TPR at 1% / 0.1% FPR | fired on unmarked models (independent, other world, "
              "base) | fired on models marked with another key | per-query match rate on nulls vs p0 |",
              "|---|---|---|---|---|---|---|"]
    wm = ref.roc_summary[ref.roc_summary.positives == "watermarked"]
    for _, s in wm.sort_values("method").iterrows():
        k = kinds[kinds.method == s.method]
        un, cross = k[k.null_kind.isin(unmarked)], k[k.null_kind == "cross"]
        rate = "exact binomial test (bits)"
        if k.query_p0.notna().all():
            def q(part):
                return _fired(int(part.null_query_matches.sum()), int(part.null_queries.sum()))
            rate = f"unmarked {q(un)}; cross-key {q(cross)}; p0 {_pct(k.query_p0.iloc[0])}"
        lines.append(f"| {s.method} | {s.n_null} | {s.auc:.3g} | {s['tpr@1%']:.3g} / {s['tpr@0.1%']:.3g} | "
                     f"{_fired(int(un.null_detected.sum()), int(un.n_null.sum()))} | "
                     f"{_fired(int(cross.null_detected.sum()), int(cross.n_null.sum()))} | {rate} |")
    target = _sci(kinds.target_fpr.iloc[0])
    lines.append(f"\nPositives are the watermarked models; the target FPR is {target}. Entries are keys × models, "
                 "not independent draws, so the Clopper–Pearson intervals are nominal"
                 + (f"; with {wm.n_null.max()} nulls or fewer, \"0 fired\" cannot show a rate of {target}"
                    if wm.n_null.max() * kinds.target_fpr.iloc[0] < 1 else "") + ".\n")
    for method in ("activemark", "aiao"):
        k = kinds[kinds.method == method]
        cross = k[k.null_kind == "cross"]
        if k.empty or cross.empty:
            continue
        p0, matches, queries = k.query_p0.iloc[0], cross.null_query_matches.sum(), cross.null_queries.sum()
        low, high = clopper_pearson(int(matches), int(queries))
        s = ref.scores[method]
        own = s[s.role == "watermarked"].p_value.median()
        worst = s[s.role.str.startswith("cross")].p_value.min()
        fired = int(cross.null_detected.sum())
        above = low > p0
        lines.append(
            f"* **{method}** on models marked with another key: per-query match rate {_pct(matches / queries)} "
            f"({_pct(low)}–{_pct(high)}), {matches / queries / p0:.2g} × its p0 of {_pct(p0)}"
            f"{f' (above it: {WHY_ABOVE[method]})' if above else ''}; "
            f"verdict fired in {fired}/{int(cross.n_null.sum())}. The owners' own p-values (median {own:.2g}) "
            f"{'stay below' if own < worst else 'do not stay below'} the smallest cross-key one ({worst:.2g})"
            + (": a positive verdict says that an owner of this method marked the model, not which one."
               if fired else "."))
    attacked = ref.roc_summary[ref.roc_summary.positives.str.startswith("attacked:trigger_ft")]
    if not attacked.empty:
        lines.append(f"* **After `trigger_ft`** the black-box marks' AUC against the nulls is "
                     f"{attacked.auc.min():.2g}–{attacked.auc.max():.2g} "
                     f"({', '.join(sorted(attacked.method))}).")
    figures = [f"![{m}](roc/roc_{w}_{m}.png)" for w in ref.null_models for m in sorted(wm.method)
               if (ref.folder / "roc" / f"roc_{w}_{m}.png").is_file()]
    if figures:
        lines.append("\nPer method: the ROC curve, every verification's statistic by kind of model with the target's "
                     "threshold, and the raw scores.\n\n| | |\n|---|---|")
        for i in range(0, len(figures), 2):
            lines.append(f"| {figures[i]} | {figures[i + 1] if i + 1 < len(figures) else ''} |")
    return "\n".join(lines) + "\n"


def alignment(ref: Reference) -> str:
    """The owner's aligned verification beside the plain one, per (method, attack) run both ways: from the records
    (`metrics.verification.align=none` and `=activations`, otherwise the same configuration)."""
    from bench.tools.search import value

    groups: dict = {}
    for r in ref.records:
        metrics = copy.deepcopy(r["config"].get("metrics") or {})
        if "verification" not in metrics:
            continue
        align = metrics["verification"].pop("align", None) or "none"
        labels = r["identity"]["labels"]
        key = (r["method"], labels["attack"], labels["model"], labels["data"], json.dumps(metrics, sort_keys=True))
        groups.setdefault(key, {}).setdefault(align, {})[r["seed"]] = r
    rows = []
    for (method, attack, *_), by in sorted(groups.items()):
        seeds = sorted(set(by.get("none", {})) & set(by.get("activations", {})))  # the same runs, verified both ways
        if not seeds:
            continue
        plain, aligned = ({s: by[a][s] for s in seeds} for a in ("none", "activations"))
        det = lambda recs: f"{sum(bool(value(r, 'verify/attacked/detected')) for r in recs.values())}/{len(recs)}"  # noqa: E731
        moved = [m for r in aligned.values() if (m := value(r, "verify/attacked/align_moved")) is not None]
        secs = [t for r in aligned.values() if (t := value(r, "verify/attacked/align_seconds")) is not None]
        spread = f"{pd.Series(moved).median():.0%} [{min(moved):.0%}, {max(moved):.0%}]" if moved else "–"
        seconds = f"{pd.Series(secs).median():.1f}" if secs else "–"
        rows.append(f"| {method} | `{attack}` | {det(plain)} | {det(aligned)} | {spread} | {seconds} |")
    lines = []
    if rows:
        lines += ["Each run verified twice, otherwise the same: plainly, and after the owner aligns the suspect's hidden "
                  "units to the owner's watermarked model (`metrics.verification.align=activations`; docs/methods.md, "
                  "\"Ownership disputes\"). A cell counts the seeds whose attacked model (final checkpoint) is "
                  "detected. *Units moved*: the fraction of the suspect's units the alignment moved at the final "
                  "checkpoint, median [min, max] over seeds.\n",
                  "| method | attack | detected, plain | detected, aligned | units moved | alignment seconds (median) |",
                  "|---|---|---|---|---|---|", *rows, ""]
    plain_csv, aligned_csv = ref.folder / "roc" / "fpr_by_null_kind.csv", ref.folder / "roc_aligned" / "fpr_by_null_kind.csv"
    if plain_csv.is_file() and aligned_csv.is_file():
        both = pd.read_csv(plain_csv).merge(pd.read_csv(aligned_csv), on=["model", "method", "null_kind"],
                                           suffixes=("_plain", "_aligned"))
        lines += ["**Alignment must not manufacture evidence.** The null models of the ROC section (models that never "
                  "saw the key), each aligned to the key's watermarked model before verifying (`python -m "
                  "bench.tools.roc --align`, `roc_aligned/`), beside the same verifications without alignment: the "
                  "verdicts that fired, and the single queries that matched (per-query tests: a verdict needs many "
                  "more matches than p0 x queries, so the query rate against the p0 the p-value assumes is where a "
                  "manufactured match would show first).\n",
                  "| method | null models | fired, plain | fired, aligned | queries matched, plain | queries matched, "
                  "aligned | p0 |", "|---|---|---|---|---|---|---|"]
        for r in both.itertuples():
            lines.append(f"| {r.method} | {r.null_kind} | {_fired(int(r.null_detected_plain), int(r.n_null_plain))} | "
                         f"{_fired(int(r.null_detected_aligned), int(r.n_null_aligned))} | "
                         f"{_fired(int(r.null_query_matches_plain), int(r.null_queries_plain))} | "
                         f"{_fired(int(r.null_query_matches_aligned), int(r.null_queries_aligned))} | "
                         f"{r.query_p0_aligned:.3g} |")
        lines.append("")
    return "\n".join(["## The owner's aligned verification\n", *lines]) + "\n" if lines else ""


def _party(row, table: pd.DataFrame) -> str:
    """A dispute table's row name: its method, and its model when the table holds more than one."""
    return f"{row.method} ({row.model})" if table.model.nunique() > 1 else row.method


def disputes(ref: Reference) -> str:
    """Forged, dual and colluding claims, from the raw rows of `python -m bench.tools.dispute` in dispute/ (the rate
    tables are re-derived here from those rows, with bench.tools.dispute's own function)."""
    from bench.tools.dispute import read_raw, tables

    folder = ref.folder / "dispute"
    raw = read_raw(folder)
    if not any(len(t) for t in raw.values()):
        return ""
    made = tables(raw)
    lines = ["## Ownership disputes: forged, dual and colluding claims\n",
             "From `dispute/` (`python -m bench.tools.dispute`; docs/methods.md, \"Ownership disputes\", states each "
             "party's threat model). Every cell is k of n with its exact 95% Clopper–Pearson interval.\n"]
    claims_ = made["false_claims"]
    if len(claims_):
        budgets = sorted(claims_.budget.unique())
        targets = raw["false_claims"].groupby(["model", "method"]).target.nunique()
        lines += ["**False claims.** A forger who never marked the target claims it: the base model and each owner's "
                  "watermarked model. *Uncommitted*: each of its B keys rewritten from the target by the method's "
                  "strongest forger; *committed*: its B keys fixed before the target existed. A claim succeeds when "
                  "any of the B keys verifies (at the runs' target FPR).\n",
                  "| method | targets | " + " | ".join(f"{c}, B = {b}" for c in ("uncommitted", "committed")
                                                        for b in budgets) + " |",
                  "|---|---|" + "---|" * (2 * len(budgets))]
        for (model, method), part in claims_.groupby(["model", "method"]):
            cells = []
            for c in ("uncommitted", "committed"):
                for b in budgets:
                    hit = part[(part.commitment == c) & (part.budget == b)]
                    cells.append(_fired(int(hit.hits.iloc[0]), int(hit.n.iloc[0])) if len(hit) else "–")
            lines.append(f"| {_party(part.iloc[0], claims_)} | {targets[model, method]} | " + " | ".join(cells) + " |")
        lines.append("")
    duals = made["dual_claims"]
    if len(duals):
        lines += ["**Dual claims** (Fan et al.'s ambiguity attack). A pirate embeds its own key into the owner's "
                  "watermarked model W, giving P. Each party's key verified on each model: the dispute is decided by "
                  "W, which predates P, so the pirate's key must not verify on W.\n",
                  "| method | pirate's method | owner's key on W | owner's key on P | pirate's key on P | "
                  "pirate's key on W |", "|---|---|---|---|---|---|"]
        for (model, method, pirate), part in duals.groupby(["model", "method", "pirate"]):
            cell = {c: _fired(int(r.hits), int(r.n)) for c, r in zip(part.cell, part.itertuples())}
            cells = [cell.get(c, "–") for c in ("owner_on_W", "owner_on_P", "pirate_on_P", "pirate_on_W")]
            pirate = f"same ({method})" if pirate == "same" else pirate
            lines.append(f"| {_party(part.iloc[0], duals)} | {pirate} | " + " | ".join(cells) + " |")
        lines.append("")
    colluded = made["collusion"]
    if len(colluded):
        lines += ["**Collusion.** The seeds' watermarked models in groups of K, averaged uniformly; each member's key "
                  "verified on the average. *Owner loss ×*: the average's owner-domain loss over the members' mean, "
                  "median [min, max] over groups.\n",
                  "| method | K | members still verified | owner loss × |", "|---|---|---|---|"]
        for r in colluded.itertuples():
            lines.append(f"| {_party(r, colluded)} | {r.K} | {_fired(int(r.hits), int(r.n))} | "
                         f"{r.owner_loss_ratio_median:.3f} [{r.owner_loss_ratio_min:.3f}, {r.owner_loss_ratio_max:.3f}] |")
        lines.append("")
    return "\n".join(lines) + "\n"


def missing(ref: Reference) -> str:
    """What the tables do not have yet: the suite's cells (conf/method/ x conf/attack/ but `none`) without a row, per
    method, and rows under five seeds."""
    from suite_cost import suite

    methods, attacks = suite(ROOT / "conf")
    have = set(zip(ref.df.method, ref.df.attack))
    absent = {m: [a for a in attacks if (m, a) not in have] for m in methods}
    absent = {m: gone for m, gone in absent.items() if gone}
    short = [f"{r.method} × {r.attack} (has {r.n_seeds})" for r in ref.df.itertuples() if r.n_seeds < 5]
    if not absent and not short:
        return f"**Complete:** every method × attack of the suite ({len(methods)} × {len(attacks)}) has a row here, and " \
               "every row has five seeds.\n"
    def cells(m, gone):
        return f"{m} × all {len(attacks)} attacks" if len(gone) == len(attacks) else \
            f"{m} × {', '.join(f'`{a}`' for a in gone)}"
    return ("**Not yet in these tables:** "
            + " ".join(([f"No row for {'; '.join(cells(m, gone) for m, gone in absent.items())}."] if absent else [])
                       + ([f"Under five seeds: {', '.join(short)}."] if short else []))
            + " `bash scripts/tiny_seeds.sh` runs the whole suite on the shipped world (hours of CPU; a killed "
              "run resumes).\n")


def worst(ref: Reference) -> str:
    """The worst case within the utility budget per method and attack family, computed from the committed searches'
    summaries (`search/*/best.json`) and the exported attacks' fresh-seed records (bench.tools.search.worst_case)."""
    from bench.tools.search import worst_case
    table = worst_case(ref.folder, write=False) if (ref.folder / "search").is_dir() else None
    head = "## The worst case within the utility budget\n\n"
    if table is None or table.empty:
        return head + ("No search results here yet: every attack above runs at its hand-set defaults. "
                       "`bash scripts/tiny_search.sh` searches each method's strongest fine-tuning setting within the "
                       "budget (`python -m bench.tools.search`, docs/methods.md \"The worst-case attacker\") and "
                       "re-runs it at five fresh seeds.\n")
    return head + ("Per method and attack family: the search's N trials (seeded TPE, one checkpoint at the end of "
                   "the attack), how many stayed within the budget, the best such configuration and its evidence at "
                   "the search seed, and how many trials within budget tie with it (all of them: the objective did "
                   "not tell the trials apart, every one left the mark's evidence where it was, and the best is "
                   "merely the earliest); then that configuration re-run at fresh seeds: removed within budget k/n with "
                   "its exact 95% interval, the median −log10 p and the utility (mean [min, max]) at the final "
                   "checkpoint. Beside it, the family's hand-set attack as the suite ran it: a trial is judged at its "
                   "last checkpoint only, the suite's run at the first of its checkpoints that is both undetected and "
                   "within budget, so a hand-set attack can count removals that the search's best does not.\n\n" + table.astype(object).where(table.notna(), "").to_markdown(index=False, floatfmt=".3g")
                   + "\n")


def report(folder: Path) -> str:
    """The whole of results/reference/README.md."""
    ref = Reference(folder)
    fpr, queries = ref.setting("metrics", "verification", "target_fpr"), ref.setting("model", "eval", "n_queries")
    fpr = _sci(float(fpr)) if fpr and "/" not in fpr else fpr
    n_fid, n_ref = ref.setting("metrics", "fid", "n_images"), ref.setting("metrics", "fid", "n_ref")
    ratio, fid_up = (ref.setting("metrics", "utility", k) for k in ("max_owner_loss_ratio", "max_fid_increase"))
    coverage = order_stat_rank(5)[1]
    one_build = len(fingerprints(ref)) <= 1
    pool = "" if one_build else " --allow-mixed-builds"  # the flag only where rows pool builds (the tables say so)
    return f"""<!-- Generated by scripts/readme_tables.py --write from the records in this folder; do not edit.
     tests/test_reference.py checks that this file is exactly what the script writes. -->
# Results on the tiny world (five seeds)

A result here is a distribution over seeds, never one run. `records/` holds the slimmed records of the
tiny-world sweep; `python -m bench.tools.leaderboard results/reference{pool}` aggregates them
into `leaderboard.csv`, `leaderboard.md` and `survival.md`, and `python scripts/readme_tables.py --write`
writes this page (and the summary in the [main README](../../README.md)) from them: every figure below is
computed from the committed records, the ROC snapshot's CSVs in `roc/` or the shipped world's manifest.
`tests/test_reference.py` re-aggregates the records and checks that the tables, `leaderboard_meta.json`
and this page are exactly what they give. Each seed draws its own key, attack batches and query noise.
`bash scripts/tiny_reference.sh` makes everything this page reads, from a clean checkout (many hours of CPU on
2 cores: docs/performance.md measures the suite's share; it resumes where a killed run stopped).

{world_paragraph(ref)}

Settings (from the records' configs): the default tiny world; {queries} verification queries, target FPR
{fpr}; FID on {n_fid} generated images against {n_ref} held-out ones; utility budget: owner loss at most
{ratio} × the watermarked model's, FID at most +{fid_up}. `conf/attack/` holds each attack's budget and
checkpoint schedule (`DEFAULT_SCHEDULE` in `attacks/base.py` for training attacks).

## At a glance

A cell counts the seeds in which the attack removed the mark while the attacker's model stayed within its
utility budget at that checkpoint (and at all); blank: not run. The tables below give the intervals.

{overview(ref)}

## How to read a cell

* **n**: the number of seeds in the row.
* **Numbers**: mean ± the half-width of the 95% t interval over seeds. Rates in [0, 1] (bit accuracy,
  verification rate) show their interval as a range, clipped to [0, 1].
* **Verdicts**: k/n seeds detected.
* **Removal** is interval-censored: it happened between the last checkpoint still detected and the first
  one not detected. The cell gives the bracket (low, high] of the median removal time (the first checkpoint
  by which half the seeds lost the mark) and the distribution-free order-statistic interval with its exact
  coverage ({coverage:.1%} for n = 5: no order-statistic interval reaches 95% with five seeds). A mark not
  detected before the attack is "not marked", never a removal at step 0. Where an attack's checkpoints are
  names, not amounts (`chain`'s links, `permute`'s kinds, `quantize`'s formats), the times are checkpoint
  numbers along its schedule ("checkpoint (17, 18]"; `survival.md` names them): an order, so the counts and
  the budget verdict hold, but no ratio of them is taken.
* **Survival** counts a removal only within the **utility budget** at the removal checkpoint: owner loss at
  most {ratio} × the watermarked model's there, and FID at most +{fid_up} there (FID is measured at the last
  checkpoint, and at each earlier undetected checkpoint within the loss budget until one passes). The
  watermarked model is the reference. It also
  states any removal, and an *inverted* mark (the attacked model's voted bits anti-correlated with the key:
  strong lower-tail evidence, while the verdict's test is upper-tail).
* **Ratios** of removal times pair seed s of RoMa with seed s of WatermarkDM (they draw the same key bits),
  never divide two marginal intervals.
* **Owner loss ×**: the owner-domain held-out denoising loss at the last checkpoint, divided by the
  watermarked model's. **Attacker gain**: 1 − the attacker-domain loss divided by the watermarked model's.

docs/methods.md ("How verdicts, intervals and tests are computed") has the statistics in full.

## Tables

{render(folder, ref)}
{tradeoff(ref)}
{claims(ref)}
{missing(ref)}
{roc(ref)}
{alignment(ref)}{disputes(ref)}{worst(ref)}
## The shipped tiny world

The build committed in `bench/world/tiny_world/`, read from its manifest (`python -m bench.tools.world quality`
measures it again). {"The records above ran on this build." if on_shipped(ref) else "The records above ran on earlier builds."}

{render_world()}
![tiny world samples](../../docs/tiny_world_samples.png)
"""


def tradeoff(ref: Reference) -> str:
    """The strength-against-utility figures (`tradeoff_*.png`, written by the leaderboard from the records) with the
    uninformed-degradation line, where the records have `attack=noise`."""
    figures = sorted(ref.folder.glob("tradeoff_*.png"))
    if not figures:
        return ""
    noise = any(identity_of(r)["labels"]["attack"].split("[")[0] == UNINFORMED for r in ref.records)
    line = ("The dashed black line is `noise` (Gaussian weight noise: an attacker who knows nothing), the "
            "uninformed-degradation reference: an attack below it removes more of the mark than degrading the model "
            "as much would." if noise else
            "The uninformed-degradation line (`noise`: Gaussian weight noise) is drawn once the suite's `noise` "
            "column has run; it has not yet.")
    return ("### Strength against utility\n\nPer method, each attack's mean strength (bit accuracy or verification "
            "rate) against the attacker's owner-domain loss ratio through its checkpoints (the final one a square), "
            "with the utility budget as a red line. " + line + "\n\n"
            + " ".join(f"![{p.stem.split('_', 2)[-1]}]({p.name})" for p in figures) + "\n")


def splice(readme: str, block: str, markers: tuple[str, str] = (BEGIN, END)) -> str:
    """`readme` with the text between the markers replaced by `block`."""
    head, rest = readme.split(markers[0], 1)
    _, tail = rest.split(markers[1], 1)
    return f"{head}{markers[0]}\n{block.rstrip()}\n{markers[1]}{tail}"


def regenerate(readme: str, folder: Path) -> str:
    """README.md with its summary block rewritten."""
    return splice(readme, summary(Reference(folder)))


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    folder = Path(args[0] if args else ROOT / "results" / "reference")
    if "--write" in sys.argv:  # write the report and README.md's block in place
        (folder / "README.md").write_text(report(folder))
        readme = ROOT / "README.md"
        readme.write_text(regenerate(readme.read_text(), folder))
    else:
        print(report(folder))


if __name__ == "__main__":
    main()
