"""Robustness and utility curves: one PNG per (model, data, attack variant), a line per method variant; and per
method the strength-against-utility trade-off of every attack beside the uninformed-degradation line (`plot_tradeoff`).

Left: the mark's strength (bit accuracy for bit methods, verification rate for the others) against
the attack budget; right: the attacker's utility at the same checkpoints (owner-domain loss
relative to the watermarked model, solid; the attacker's gain on its own domain, dashed). Lines
are the mean over seeds, the band their min-max; the legend gives n.
"""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import LogFormatter  # noqa: E402
import numpy as np  # noqa: E402

from bench.analysis.aggregate import group_records  # noqa: E402
from bench.identity import digest  # noqa: E402


def _strength(point: dict) -> float | None:
    return point["bit_acc"] if point.get("bit_acc") is not None else point.get("verification_rate")


def _band(ax, curves: list[list[dict]], value, **style) -> None:
    """Mean line and min-max band over seeds of `value(point)` against the budget (numeric) or index."""
    xs = [p.get("budget", p["step"]) for p in curves[0]]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    pos = xs if numeric else list(range(len(xs)))
    ys = np.array([[np.nan if value(p) is None else value(p) for p in c] for c in curves if len(c) == len(xs)],
                  dtype=float)
    line = ax.plot(pos, np.nanmean(ys, axis=0), **style)[0]
    if len(ys) > 1:
        ax.fill_between(pos, np.nanmin(ys, axis=0), np.nanmax(ys, axis=0), color=line.get_color(), alpha=0.15, lw=0)
    if not numeric:
        ax.set_xticks(pos, [str(x) for x in xs], fontsize=7)


PLOT_VERSION = "2"  # bump when a figure's drawing changes, so cached PNGs are redrawn


def up_to_date(path: Path, by_method: dict[str, list[dict]]) -> bool:
    """True when `path` was drawn from exactly these records (same run ids and statuses); else note that
    it is about to be, so an unchanged figure is never drawn twice (re-aggregation stays fast)."""
    key = digest([PLOT_VERSION, sorted((r["run_id"], r["status"]) for recs in by_method.values() for r in recs)])
    stamp = path.with_name(f".{path.name}.key")
    if path.is_file() and stamp.is_file() and stamp.read_text() == key:
        return True
    stamp.write_text(key)
    return False


def _figures(records: list[dict], where, out_dir: Path, kind: str) -> list[tuple[Path, tuple, dict[str, list[dict]]]]:
    """(path, (model, data, metrics, attack), {method: its records}) of each figure: one per panel, a line per
    method; the file name names the data where the records hold more than one data set, and the metrics only where
    the same attack was measured with more than one metrics set (e.g. `metrics.verification.align=none,activations`):
    a search's re-run without the CLIP score keeps the plain name."""
    panels: dict[tuple, dict[str, list[dict]]] = {}
    for (*panel, method), recs in group_records(records, ("model", "data", "metrics", "attack", "method"), where).items():
        panels.setdefault(tuple(panel), {})[method] = recs
    data_kinds = {k[1] for k in panels}
    metric_kinds = _metric_kinds(panels, lambda k: (k[0], k[1], k[3]), lambda k: k[2])
    out = []
    for (model, data, metrics, attack), by_method in sorted(panels.items()):
        parts = ([model] + ([data] if len(data_kinds) > 1 else [])
                 + ([metrics] if len(metric_kinds[model, data, attack]) > 1 else []))
        out.append((out_dir / f"{kind}_{'_'.join(slug(x) for x in parts + [attack])}.png", (model, data, metrics, attack),
                    by_method))
    return out


def _metric_kinds(keys, where, metrics) -> dict[tuple, set[str]]:
    """where(key) -> the metrics sets its keys hold."""
    out: dict[tuple, set[str]] = {}
    for k in keys:
        out.setdefault(where(k), set()).add(metrics(k))
    return out


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")


def plot_robustness(records: list[dict], out_dir: Path) -> list[Path]:
    """Write robustness_<model>_<attack>.png per (model, data, metrics, attack) with curves; return the paths."""
    figures = _figures(records, lambda r: r["status"] == "complete" and bool(r.get("curves", {}).get("robustness")),
                       out_dir, "robustness")
    for path, (model, data, metrics, attack), by_method in figures:
        if up_to_date(path, by_method):
            continue
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
        label, any_util = "step", False
        for method, recs in sorted(by_method.items()):
            rob = [r["curves"]["robustness"] for r in recs]
            label = rob[0][0].get("budget_label", "step")
            kind = "bit acc" if rob[0][0].get("bit_acc") is not None else "verif. rate"
            _band(left, rob, _strength, marker="o", ms=3, label=f"{method} ({kind}, n={len(recs)})")
            util = [r["curves"]["utility"] for r in recs if r["curves"].get("utility")]
            if util:
                any_util = True
                _band(right, util, lambda p: p["owner_loss_ratio"], marker="o", ms=3, label=f"{method}: owner loss")
                _band(right, util, lambda p: p["attacker_gain"], ls="--", marker="x", ms=3,
                      label=f"{method}: attacker gain")
        left.axhline(0.5, color="grey", lw=0.8, ls="--", label="chance (bits)")
        xlabel = label if label.startswith(attack.split("[")[0]) else f"{attack} {label}"
        title = textwrap.shorten(f"{model} / {data}: {attack}", 60, placeholder="…")
        left.set(xlabel=xlabel, ylabel="bit accuracy / verification rate", title=title, ylim=(0, 1.05))
        right.set(xlabel=xlabel, ylabel="owner loss / watermarked (solid); attacker gain (dashed)",
                  title="attacker's utility")
        right.axhline(1.0, color="grey", lw=0.8, ls=":")
        if not any_util:  # e.g. slimmed records (results/reference) or records from before the utility collector
            right.text(0.5, 0.5, "no utility curve in these records", ha="center", va="center",
                       transform=right.transAxes, color="grey")
        for ax in (left, right):
            if label == "step":  # removal often happens in the first steps: spread them out
                ax.set_xscale("symlog", linthresh=1)
                ax.set_xlim(left=0)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return [f[0] for f in figures]


UNINFORMED = "noise"  # the attack whose curve is the uninformed-degradation reference: weight noise knows nothing


def _mean_curve(curves: list[list[dict]], value) -> np.ndarray:
    """The mean over seeds of `value(point)` at each checkpoint (curves of another length than the first dropped)."""
    rows = [[np.nan if value(p) is None else value(p) for p in c] for c in curves if len(c) == len(curves[0])]
    return np.nanmean(np.array(rows, dtype=float), axis=0)


def tradeoff_lines(by_attack: dict[str, list[dict]]) -> list[dict]:
    """Per attack variant (sorted): {"attack", "n", "x": mean owner-loss ratio per checkpoint, "y": mean strength,
    "uninformed": whether it is the reference (`attack=noise`)}."""
    out = []
    for attack, recs in sorted(by_attack.items()):
        out.append({"attack": attack, "n": len(recs), "uninformed": re.split(r"[\[ ]", attack)[0] == UNINFORMED,
                    "x": _mean_curve([r["curves"]["utility"] for r in recs], lambda p: p.get("owner_loss_ratio")),
                    "y": _mean_curve([r["curves"]["robustness"] for r in recs], _strength)})
    return out


def plot_tradeoff(records: list[dict], out_dir: Path) -> list[Path]:
    """Write tradeoff_<model>_<method>.png per (model, data, method; data named in the file only where the records
    hold more than one, metrics in a line's name only where its attack ran with more than one): the mark's strength
    against the attacker's owner-domain loss ratio, a line per attack variant through its checkpoints (mean over
    seeds; a search's exported worst case is one such line), beside
    the uninformed-degradation line (weight noise, `attack=noise`: an attacker who knows nothing, at the same utility
    loss) and the utility budget. An attack below the noise line removes more than degradation alone would."""
    def usable(r: dict) -> bool:
        curves = r.get("curves", {})
        return (r["status"] == "complete" and bool(curves.get("robustness")) and bool(curves.get("utility"))
                and len(curves["robustness"]) == len(curves["utility"]))
    groups = group_records(records, ("model", "data", "metrics", "method", "attack"), usable)
    metric_kinds = _metric_kinds(groups, lambda k: (k[0], k[1], k[3], k[4]), lambda k: k[2])
    panels: dict[tuple, dict[str, list[dict]]] = {}
    for (model, data, metrics, method, attack), recs in groups.items():
        # one panel per method: an attack measured with two metrics sets (aligned or not) is two lines, named so
        several = len(metric_kinds[model, data, method, attack]) > 1
        panels.setdefault((model, data, method), {})[f"{attack} ({metrics})" if several else attack] = recs
    data_kinds = {k[1] for k in panels}
    paths = []
    for (model, data, method), by_attack in sorted(panels.items()):
        parts = [model] + ([data] if len(data_kinds) > 1 else []) + [method]
        path = out_dir / f"tradeoff_{'_'.join(slug(x) for x in parts)}.png"
        paths.append(path)
        if up_to_date(path, by_attack):
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        budgets = {r["config"].get("metrics", {}).get("utility", {}).get("max_owner_loss_ratio")
                   for recs in by_attack.values() for r in recs}
        for i, line in enumerate(tradeoff_lines(by_attack)):
            x, y, name = line["x"], line["y"], f"{line['attack']} (n={line['n']})"
            if line["uninformed"]:
                ax.plot(x, y, color="black", lw=2.2, ls="--", zorder=5, label=f"uninformed degradation: {name}")
            else:
                # 15+ attacks per panel: 20 colours, and a marker that changes with each round of them
                color, marker = plt.get_cmap("tab20")(i % 20), "o^vD<>"[i // 20 % 6]
                ax.plot(x, y, marker=marker, ms=2.5, lw=1, color=color, label=name)
                ax.plot(x[-1:], y[-1:], marker="s", ms=5, color=color)  # the final checkpoint
        for budget in sorted(b for b in budgets if b is not None):
            ax.axvline(budget, color="red", lw=0.9, ls=":", label=f"utility budget (owner loss x{budget:g})")
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        for axis_formatter in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
            axis_formatter(LogFormatter(labelOnlyBase=False))  # 1.2, not 1.2 x 10^0 (minor labels where they fit)
        ax.set(xlabel="owner-domain loss / watermarked model's (log)", ylabel="bit accuracy / verification rate",
               ylim=(0, 1.05), title=textwrap.shorten(f"{model} / {data}: {method}, strength against utility", 70,
                                                      placeholder="…"))
        ax.legend(fontsize=5.5, ncol=2)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return paths


LMC_PAIRS = {"lmc/wm_to_attacked": "watermarked → attacked", "lmc/base_to_wm": "base → watermarked"}


def plot_lmc(records: list[dict], out_dir: Path) -> list[Path]:
    """Write lmc_<model>_<attack>.png per (model, data, metrics, attack) with LMC curves; return the paths.

    Rows: the pairs watermarked → attacked and base → watermarked; columns: the task (denoising) loss
    and the method's watermark loss along λ. A line per method variant, the mean over seeds (band: min-max)."""
    figures = _figures(records, lambda r: r["status"] == "complete" and any(r.get("curves", {}).get(p) for p in LMC_PAIRS),
                       out_dir, "lmc")
    for path, (model, data, metrics, attack), by_method in figures:
        if up_to_date(path, by_method):
            continue
        fig, axes = plt.subplots(2, 2, figsize=(10, 6.4), squeeze=False)
        for row, (pair, pair_title) in enumerate(LMC_PAIRS.items()):
            for col, loss in enumerate(("task", "watermark")):
                ax = axes[row][col]
                for i, (method, recs) in enumerate(sorted(by_method.items())):
                    curves = [r["curves"][pair] for r in recs if r["curves"].get(pair, {}).get(loss)]
                    curves = [c for c in curves if len(c[loss]) == len(curves[0][loss])] if curves else []
                    if not curves:
                        continue
                    ys = np.array([c[loss] for c in curves], dtype=float)
                    line = ax.plot(curves[0]["lambda"], ys.mean(axis=0), marker="o", ms=3, color=f"C{i}",
                                   label=f"{method} (n={len(curves)})")[0]
                    if len(ys) > 1:
                        ax.fill_between(curves[0]["lambda"], ys.min(axis=0), ys.max(axis=0), color=line.get_color(),
                                        alpha=0.15, lw=0)
                ax.set(xlabel="λ", ylabel=f"{loss} loss", title=f"{pair_title}: {loss} loss")
                if ax.get_legend_handles_labels()[0]:
                    ax.legend(fontsize=6)
                else:
                    ax.text(0.5, 0.5, "no curve", ha="center", va="center", transform=ax.transAxes, color="grey")
        title = f"{model} / {data}: {attack}" + (f" ({metrics})" if len({f[1][2] for f in figures}) > 1 else "")
        fig.suptitle(textwrap.fill(f"linear mode connectivity, {title}", 130), fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return [f[0] for f in figures]
