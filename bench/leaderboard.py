"""Aggregate records into a leaderboard: CSV, markdown table and robustness plots.

    python -m bench.leaderboard [RESULTS_DIR]

Reads every `record.json` under `<RESULTS_DIR>/records` (failed runs included), writes
`leaderboard.csv`, `leaderboard.md`, `survival.md` (attacks x methods: survives, or the budget
that removed the mark) and `robustness_<model>_<attack>.png` into RESULTS_DIR, and logs the
leaderboard to wandb when the newest record's run used `logger=wandb`. One row per
model x method x attack; numeric metrics are averaged over seeds (`n_seeds` says how many).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hydra.experimental.callback import Callback  # noqa: E402

from bench.cache import write_json_atomic  # noqa: E402
from bench.outcome import adopt_sweep  # noqa: E402

log = logging.getLogger(__name__)
KEYS = ["model", "method", "attack"]


def load_records(results_dir: Path) -> list[dict]:
    """Every record under `results_dir/records`, one per run id (the newest file wins)."""
    records = {}
    for path in sorted((Path(results_dir) / "records").glob("*/record.json"), key=lambda p: p.stat().st_mtime):
        rec = json.loads(path.read_text())
        records[rec["run_id"]] = rec
    return list(records.values())


def table(records: list[dict]) -> pd.DataFrame:
    """One row per model x method x attack: metric means over complete seeds, plus status columns."""
    rows = []
    for rec in records:
        row = {k: rec[k] for k in KEYS} | {"seed": rec["seed"], "status": rec["status"], "error": rec.get("error")}
        for name, m in rec.get("metrics", {}).items():
            value = m["value"]
            row[name] = float(value) if isinstance(value, (bool, int, float)) else None
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=KEYS + ["status", "n_seeds"])
    df = pd.DataFrame(rows)
    metric_cols = [c for c in df.columns if c not in KEYS + ["seed", "status", "error"]]
    complete, failed = df[df.status == "complete"], df[df.status != "complete"]
    agg = complete.groupby(KEYS)[metric_cols].mean()
    agg["n_seeds"] = complete.groupby(KEYS).size()
    fails = failed.groupby(KEYS).agg(n_failed=("status", "size"), error=("error", "first"))
    out = agg.join(fails, how="outer").reset_index()
    out[["n_seeds", "n_failed"]] = out[["n_seeds", "n_failed"]].fillna(0).astype(int)
    out["status"] = np.where(out.n_failed == 0, "complete", np.where(out.n_seeds == 0, "failed", "partial"))
    front = KEYS + ["status", "n_seeds"]
    return out[front + [c for c in out.columns if c not in front]].sort_values(KEYS).reset_index(drop=True)


def _variant(rec: dict, recs: list[dict]) -> str:
    """' r=1.0' etc.: the method settings that tell this record from others of the same method."""
    mine = rec.get("config", {}).get("method", {})
    others = [r.get("config", {}).get("method", {}) for r in recs if r is not rec and r["method"] == rec["method"]]
    keys = sorted({k for o in others for k in set(o) | set(mine) if o.get(k) != mine.get(k)})
    return "".join(f" {k}={mine.get(k)}" for k in keys)


def plot_robustness(records: list[dict], out_dir: Path) -> list[Path]:
    """One PNG per (model, attack): bit accuracy (bit methods) or verification rate (sub-path and
    hold-out-input methods) vs attack budget (step, sparsity...), a line per method.

    Curves from records written before budgets existed fall back to the checkpoint step.
    """
    paths = []
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        if rec["status"] == "complete" and rec.get("curves", {}).get("robustness"):
            groups.setdefault((rec["model"], rec["attack"]), []).append(rec)
    for (model, attack), recs in sorted(groups.items()):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for rec in sorted(recs, key=lambda r: (r["method"], r["seed"])):
            curve = rec["curves"]["robustness"]
            bits = curve[0].get("bit_acc") is not None
            ax.plot([p.get("budget", p["step"]) for p in curve],
                    [p["bit_acc"] if bits else p["verification_rate"] for p in curve], marker="o" if bits else "s",
                    label=f"{rec['method']}{_variant(rec, recs)} ({'bit acc' if bits else 'verif. rate'}, seed {rec['seed']})")
        ax.axhline(0.5, color="grey", lw=0.8, ls="--", label="chance (bits)")
        label = recs[0]["curves"]["robustness"][0].get("budget_label", "step")
        ax.set(xlabel=label if label.startswith(attack) else f"{attack} {label}", ylabel="bit accuracy / verification rate", title=f"{model}: {attack}", ylim=(0, 1.05))
        if label == "step":  # removal usually happens in the first few steps: spread them out
            ax.set_xscale("symlog", linthresh=1)
            ax.set_xlim(left=0)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"robustness_{model}_{attack}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def _final(rec: dict) -> float | None:
    """The attacked model's bit accuracy (bit methods) or verification rate (the others)."""
    m = rec["metrics"]
    value = m.get("verify/attacked/bit_acc", {}).get("value")
    return value if value is not None else m.get("verify/attacked/verification_rate", {}).get("value")


def survival_matrix(records: list[dict]) -> pd.DataFrame:
    """Attacks x methods, per model: 'survives (v)' or 'removed at <budget> (v)', v the final bit accuracy or
    verification rate (mean over seeds); seeds that disagree show as 'survives k/n seeds'."""
    cells: dict[tuple, list[dict]] = {}
    for rec in records:
        if rec["status"] == "complete" and "survived_attack" in rec.get("metrics", {}):
            cells.setdefault((rec["model"], rec["attack"], rec["method"]), []).append(rec)
    rows: dict[tuple, dict] = {}
    for (model, attack, method), recs in sorted(cells.items()):
        survived = [bool(r["metrics"]["survived_attack"]["value"]) for r in recs]
        finals = [v for v in map(_final, recs) if v is not None]
        value = f" ({np.mean(finals):.2f})" if finals else ""
        if all(survived):
            text = f"survives{value}"
        elif not any(survived):
            budgets = list(dict.fromkeys(str(r["metrics"]["removal_budget"]["value"]) for r in recs))
            text = f"removed at {', '.join(budgets)}{value}"
        else:
            text = f"survives {sum(survived)}/{len(survived)} seeds{value}"
        rows.setdefault((model, attack), {"model": model, "attack": attack})[method] = text
    df = pd.DataFrame(list(rows.values()))
    return df[[c for c in df.columns if c in ("model", "attack")] + sorted(c for c in df.columns if c not in ("model", "attack"))]


def write_leaderboard(results_dir: Path) -> pd.DataFrame:
    """Write leaderboard.csv / .md / .json and the plots into `results_dir`; return the table."""
    results_dir = Path(results_dir)
    records = load_records(results_dir)
    df = table(records)
    if not records:  # nothing ran (e.g. every job was refused): write nothing
        log.info("no records under %s", results_dir / "records")
        return df
    results_dir.mkdir(parents=True, exist_ok=True)
    tmp = results_dir / ".leaderboard.csv.tmp"
    df.to_csv(tmp, index=False)
    tmp.replace(results_dir / "leaderboard.csv")
    tmp = results_dir / ".leaderboard.md.tmp"
    tmp.write_text(df.to_markdown(index=False, floatfmt=".4g") + "\n")
    tmp.replace(results_dir / "leaderboard.md")
    matrix = survival_matrix(records)
    if not matrix.empty:
        tmp = results_dir / ".survival.md.tmp"
        tmp.write_text(matrix.fillna("").to_markdown(index=False) + "\n")
        tmp.replace(results_dir / "survival.md")
    directions = {n: m["higher_is_better"] for r in records for n, m in r.get("metrics", {}).items()}
    write_json_atomic(results_dir / "leaderboard_meta.json", {"higher_is_better": directions, "n_records": len(records)})
    plot_robustness(records, results_dir)
    log.info("leaderboard: %d rows from %d records -> %s", len(df), len(records), results_dir / "leaderboard.csv")
    return df


def log_to_logger(logger_cfg, results_dir: Path) -> None:
    """Log the leaderboard to the configured logger (a config with `_target_`, e.g. logger=wandb)."""
    if logger_cfg and "_target_" in logger_cfg:
        from hydra.utils import instantiate
        instantiate(logger_cfg).log_leaderboard(Path(results_dir))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", nargs="?", default="results", help="folder holding records/ (default: results)")
    args = parser.parse_args(argv)
    df = write_leaderboard(Path(args.results_dir))
    print(df.to_markdown(index=False, floatfmt=".4g"))
    newest = load_records(Path(args.results_dir))[-1:]  # its logger settings (e.g. logger=wandb) apply
    if newest:
        log_to_logger(newest[0].get("config", {}).get("logger"), Path(args.results_dir))


if __name__ == "__main__":
    main()


class LeaderboardCallback(Callback):
    """Hydra callback: rewrite the leaderboard after a run or a sweep and print it.

    (Jobs never raise on failure, they record it, so `on_multirun_end` always runs; the
    standalone command above covers sweeps interrupted by other means.)
    """

    def _write(self, config) -> None:
        df = write_leaderboard(Path(config.paths.results_dir))
        if df.empty:
            return
        cols = [c for c in df.columns if c in KEYS + ["status", "verify/watermarked/bit_acc", "verify/attacked/bit_acc",
                                                      "verify/attacked/verification_rate",
                                                      "steps_to_removal", "fid/watermarked", "clip_score/watermarked"]]
        print("\n" + df[cols].to_markdown(index=False, floatfmt=".4g"))
        print(f"\nleaderboard: {Path(config.paths.results_dir) / 'leaderboard.csv'}")

    def on_run_end(self, config, **kwargs) -> None:
        self._write(config)

    def on_multirun_end(self, config, **kwargs) -> None:
        self._write(config)
        log_to_logger(config.get("logger"), Path(config.paths.results_dir))
        summary = adopt_sweep(config.hydra.sweep.dir)  # the jobs may have run elsewhere (SLURM)
        if summary:
            print("\n" + summary, file=sys.stderr)
