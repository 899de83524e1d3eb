"""The README's tiny-world tables, printed from a leaderboard (default: results/reference/).

    .venv/bin/python scripts/readme_tables.py [RESULTS_DIR]            # print the block
    .venv/bin/python scripts/readme_tables.py --write                  # rewrite README.md's block in place

tests/test_reference.py checks that README.md's block is exactly what this prints for results/reference.

One markdown table per attack: each method's mark before and after the attack (bit accuracy or
verification rate, mean ± 95% half-width over seeds), detection k/n, removal as a Kaplan-Meier
median's bracket with its order-statistic interval, quality (FID, CLIP) and the attacker's utility; then
the steps-to-removal ratios of RoMa over WatermarkDM from paired seeds (seed s of both draws the same key
bits): the median per-seed ratio's bracket and its order-statistic interval with its exact coverage
(`bench.analysis.survival.paired_ratio`), read from the committed records.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.analysis.aggregate import current, identity_of, removal_intervals  # noqa: E402
from bench.analysis.leaderboard import cell  # noqa: E402
from bench.record import load_records  # noqa: E402
from bench.analysis.survival import paired_ratio  # noqa: E402

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


BEGIN, END = "<!-- readme_tables: begin -->", "<!-- readme_tables: end -->"
WORLD = ("<!-- world: begin -->", "<!-- world: end -->")


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


def render(folder: Path) -> str:
    """The README's results block: a table per attack, the survival table and the paired ratios."""
    df = pd.read_csv(folder / "leaderboard.csv")
    out = []
    for attack, rows in df.groupby("attack", sort=True):
        out.append(f"**{attack}**\n\n{table(rows)}\n")
    records, _ = current([r for r in load_records(folder) if r["status"] == "complete"])
    out.append("**RoMa / WatermarkDM steps-to-removal, paired by seed** (median per-seed ratio in (low, high], "
               "order-statistic interval with its exact coverage)\n")
    fmt = lambda x: "∞" if math.isinf(x) else f"{x:.2g}"  # noqa: E731
    ratios = []
    for attack in sorted(df.attack.unique()):
        a, b = per_seed(records, "roma", attack), per_seed(records, "watermarkdm", attack)
        if not a or not b or not any(iv["event"] for iv in [*a.values(), *b.values()]):
            continue  # no removal time in this row (a budget-free attack, or neither was removed)
        r = paired_ratio(a, b)
        if r["n"]:
            ratios.append(f"* {attack}: in ({fmt(r['median_low'])}, {fmt(r['median_high'])}]× over {r['n']} paired "
                          f"seeds ({r['coverage']:.1%} CI {fmt(r['ci_low'])}–{fmt(r['ci_high'])})")
    out.append("\n".join(ratios) + "\n")
    out.append("**Survival** (`survival.md`): removal within the utility budget at the removal checkpoint, and any "
               "removal\n\n" + (folder / "survival.md").read_text())
    return "\n".join(out)


def splice(readme: str, block: str, markers: tuple[str, str] = (BEGIN, END)) -> str:
    """`readme` with the text between the markers replaced by `block`."""
    head, rest = readme.split(markers[0], 1)
    _, tail = rest.split(markers[1], 1)
    return f"{head}{markers[0]}\n{block.rstrip()}\n{markers[1]}{tail}"


def regenerate(readme: str, folder: Path) -> str:
    """The README with both generated blocks rewritten."""
    return splice(splice(readme, render(folder)), render_world(), WORLD)


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    folder = Path(args[0] if args else "results/reference")
    block = render(folder)
    if "--write" in sys.argv:  # rewrite the README's block in place
        readme = Path(__file__).resolve().parents[1] / "README.md"
        readme.write_text(regenerate(readme.read_text(), folder))
    else:
        print(block)


if __name__ == "__main__":
    main()
