"""The README's tiny-world tables, printed from a leaderboard (default: results/reference/).

    .venv/bin/python scripts/readme_tables.py [RESULTS_DIR]

One markdown table per attack: each method's mark before and after the attack (bit accuracy or
verification rate, mean ± 95% half-width over seeds), detection k/n, removal as a Kaplan-Meier
median with its interval, quality (FID, CLIP) and the attacker's utility; then the steps-to-removal
ratios of RoMa over WatermarkDM with their intervals.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.leaderboard import cell  # noqa: E402
from bench.survival import ratio  # noqa: E402

COLUMNS = [("strength", "marked ↑"), ("verify/watermarked/detected", "marked detected"),
           ("attacked_strength", "after attack ↑"), ("verify/attacked/detected", "detected after"),
           ("removal", "removal step or budget: KM median (95% CI)"), ("false_positives", "false pos. ↓"),
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


def km(row: pd.Series) -> dict:
    return {"median": row["removal/median"], "ci_low": row["removal/ci_low"], "ci_high": row["removal/ci_high"]}


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "results/reference")
    df = pd.read_csv(folder / "leaderboard.csv")
    for attack, rows in df.groupby("attack", sort=True):
        print(f"\n**{attack}**\n\n{table(rows)}")
    print("\n**RoMa / WatermarkDM steps-to-removal (ratio of Kaplan-Meier medians, conservative 95% interval)**\n")
    for attack, rows in df.groupby("attack", sort=True):
        by = {r["method"]: r for _, r in rows.iterrows()}
        if {"roma", "watermarkdm"} <= set(by) and "removal/median" in df:
            if pd.isna(by["roma"]["removal/median"]) or pd.isna(by["watermarkdm"]["removal/median"]):
                continue  # no removal time in this row (a budget-free attack such as permute)
            r = ratio(km(by["roma"]), km(by["watermarkdm"]))
            if math.isnan(r["ratio"]):
                continue  # neither was removed (attack=none): no ratio
            fmt = lambda x: "∞" if math.isinf(x) else f"{x:.2g}"  # noqa: E731
            print(f"* {attack}: {fmt(r['ratio'])}x (95% CI {fmt(r['ci_low'])}–{fmt(r['ci_high'])})")


if __name__ == "__main__":
    main()
