"""The HTML report: one self-contained page of a results folder, `<RESULTS_DIR>/report.html`.

    python -m bench.tools.report [RESULTS_DIR]

`write_report` builds it from the records alone, plus the PNGs the leaderboard writes beside them
(`bench.analysis.leaderboard` calls it at the end of every aggregation): a header (the folder, records, rows,
superseded and failed records, the time), the leaderboard (the cells of leaderboard.md, sortable by
clicking a column header), the survival table, the robustness + utility and LMC figures, the ROC
figures and summary when `roc/` exists (`bench.tools.roc`), a sample grid per row (the lowest seed's
`samples.png`, `bench.run.samples`) and each run's config and provenance, collapsed, grouped by row.
Figures are embedded as data URIs; sample grids too while they total under `EMBED_LIMIT` bytes, else
they are linked by paths relative to the page, so it also works opened as a file from the folder.
"""
from __future__ import annotations

import base64
import datetime
import json
import logging
import math
from pathlib import Path

import jinja2
import pandas as pd

from bench.cache import write_text_atomic
from bench.analysis.aggregate import LABELS, current, identity_of, row_labels, table
from bench.analysis.tables import HEADLINE, arrow, cell, survival_matrix
from bench.errors import ConfigError
from bench.record import load_records
from bench.untrusted import read_json, run_name

log = logging.getLogger(__name__)

EMBED_LIMIT = 15_000_000  # bytes of sample grids embedded in the page; beyond it they are linked
TEMPLATES = Path(__file__).resolve().parent / "templates"


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _num(x) -> str:
    """A sort key for the page's script: a number as text ('' for none, 'Infinity' for ∞)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity") if math.isinf(x) else repr(x)


def _sort_value(row: pd.Series, name: str) -> str:
    if name == "removal":
        return _num(row.get("removal/median"))
    return _num(row.get(f"{name}/median") if name.endswith("p_value") else row.get(name))


def leaderboard(df: pd.DataFrame, directions: dict) -> dict:
    """The leaderboard.md table as header and cells (text, numeric sort key); label columns that are the same
    in every row (other than method and attack) go to `fixed`."""
    shown = [(m, t) for m, t in HEADLINE if m in df.columns or f"{m}/median" in df.columns]
    labels = [c for c in LABELS if c in ("method", "attack") or df[c].nunique() > 1]
    fixed = {c: str(df[c].iloc[0]) for c in LABELS if c not in labels and len(df)}
    header = [{"title": c, "numeric": False} for c in labels] + [{"title": "n", "numeric": True}]
    header += [{"title": t + arrow(directions, m), "numeric": True, "metric": m} for m, t in shown]
    rows = []
    for _, row in df.iterrows():
        status = "" if row["status"] == "complete" else f" ({row['status']})"
        cells = [{"text": str(row[c]), "cls": "label", "v": None} for c in labels]
        cells.append({"text": f"{int(row['n_seeds'])}{status}", "cls": None, "v": _num(row["n_seeds"])})
        cells += [{"text": cell(row, m), "cls": None, "v": _sort_value(row, m)} for m, _ in shown]
        error = row.get("error")
        rows.append({"cells": cells, "status": row["status"], "error": None if pd.isna(error) else str(error)})
    return {"header": header, "rows": rows, "fixed": fixed}


def _frame(df: pd.DataFrame) -> dict:
    """A plain table (survival, ROC summary): header and cells, numbers sortable as numbers."""
    rows = []
    for _, row in df.iterrows():
        cells = []
        for c in df.columns:
            v = row[c]
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not pd.isna(v):
                cells.append({"text": f"{v:.3g}", "cls": None, "v": _num(v)})
            else:
                text = "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)
                cells.append({"text": text, "cls": "label", "v": None})
        rows.append({"cells": cells, "status": None, "error": None})
    numeric = [bool(rows) and all(r["cells"][i]["v"] is not None or not r["cells"][i]["text"] for r in rows)
               for i in range(len(df.columns))]
    return {"header": [{"title": str(c), "numeric": n} for c, n in zip(df.columns, numeric)], "rows": rows, "fixed": {}}


def _figures(folder: Path, pattern: str) -> list[dict]:
    return [{"name": p.name, "src": data_uri(p)} for p in sorted(folder.glob(pattern)) if p.is_file()]


def sample_grids(records: list[dict], labels: dict, records_dir: Path, results_dir: Path) -> list[dict]:
    """Per row, the lowest seed's samples.png with its row names; embedded while they total under EMBED_LIMIT."""
    chosen: dict[str, tuple[dict, Path]] = {}
    for rec in sorted(records, key=lambda r: (r["seed"], r["run_id"])):
        group = identity_of(rec)["group"]
        png = records_dir / run_name(rec["run_id"], "A record's run_id", "") / "samples.png"  # never a path
        if rec["status"] == "complete" and group not in chosen and png.is_file():
            chosen[group] = (rec, png)
    embed = sum(p.stat().st_size for _, p in chosen.values()) < EMBED_LIMIT
    grids = []
    for group, (rec, png) in chosen.items():
        meta_path = png.with_name("samples.json")
        try:
            meta = read_json(meta_path, "The sample grid's", "") if meta_path.is_file() else {}
        except ConfigError as err:
            log.warning("%s", err)
            meta = {}
        meta = meta if isinstance(meta, dict) else {}
        names = [{"row": str(r.get("row", "")), "prompt": r.get("prompt")} for r in meta.get("rows") or []]
        cell_px = min(max(int(meta.get("resolution") or 64), 64), 128)
        grids.append({"labels": labels[group], "run_id": rec["run_id"], "seed": rec["seed"],
                      "src": data_uri(png) if embed else png.relative_to(results_dir).as_posix(),
                      "rows": names, "cell": cell_px, "n": meta.get("n"), "prompts": meta.get("prompts") or []})
    return sorted(grids, key=lambda g: [g["labels"][k] for k in LABELS])


def _dump(x) -> str:
    """JSON, indented (the C encoder: a YAML dump of 300 runs' configs took 15 s)."""
    return json.dumps(x, indent=1, ensure_ascii=False, default=str)


def runs(records: list[dict], kept: list[dict], labels: dict) -> list[dict]:
    """Every record, grouped by row (in the leaderboard's order), with its config and provenance as JSON."""
    current_ids = {r["run_id"] for r in kept}
    groups: dict[str, list[dict]] = {}
    for rec in records:
        groups.setdefault(identity_of(rec)["group"], []).append(rec)
    out = []
    for group, recs in groups.items():
        items = []
        for rec in sorted(recs, key=lambda r: (r.get("seed", 0), r["run_id"])):
            sections = {"provenance": rec.get("provenance"), "versions": rec.get("versions"), "key": rec.get("key"),
                        "timings": rec.get("timings"), "config": rec.get("config")}
            items.append({"run_id": rec["run_id"], "seed": rec.get("seed"), "status": rec.get("status"),
                          "superseded": rec["run_id"] not in current_ids, "error": rec.get("error"),
                          "traceback": rec.get("traceback"),
                          "sections": [(k, _dump(v)) for k, v in sections.items() if v is not None]})
        out.append({"labels": labels[group], "group": group[:8], "runs": items})
    return sorted(out, key=lambda g: [g["labels"][k] for k in LABELS])


def render(results_dir: Path, records: list[dict] | None = None) -> str:
    """The page's HTML for the results folder (its records, unless given)."""
    results_dir = Path(results_dir)
    records_dir = results_dir / "records" if (results_dir / "records").is_dir() else results_dir
    records = load_records(results_dir) if records is None else records
    kept, superseded = current(records)
    labels = row_labels(records)
    df = table(records)
    directions = {n: m["higher_is_better"] for r in records for n, m in r.get("metrics", {}).items()}
    matrix = survival_matrix(records)
    roc = results_dir / "roc"
    roc_table = None
    if (roc / "roc_summary.csv").is_file():
        try:
            roc_table = _frame(pd.read_csv(roc / "roc_summary.csv"))
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            roc_table = None
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    files = [n for n in ("leaderboard.csv", "leaderboard.md", "survival.md", "leaderboard_meta.json")
             if (results_dir / n).is_file()]
    return env.get_template("report.html.j2").render(
        folder=str(results_dir.resolve()), n_records=len(records), n_rows=len(df), n_superseded=superseded,
        n_failed=sum(r.get("status") != "complete" for r in records),
        generated=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        commits=sorted({str(c)[:12] for r in records if (c := (r.get("provenance") or {}).get("git_commit"))}),
        board=leaderboard(df, directions) if len(df) else None,
        survival=None if matrix.empty else _frame(matrix.fillna("")),
        robustness=_figures(results_dir, "robustness_*.png"), lmc=_figures(results_dir, "lmc_*.png"),
        tradeoff=_figures(results_dir, "tradeoff_*.png"),
        roc_figures=_figures(roc, "roc_*.png") if roc.is_dir() else [], roc_table=roc_table,
        grids=sample_grids(kept, labels, records_dir, results_dir), groups=runs(records, kept, labels),
        varying=[k for k in LABELS if k not in ("method", "attack") and len({v[k] for v in labels.values()}) > 1],
        files=files)


def write_report(results_dir: Path, records: list[dict] | None = None) -> Path:
    """Write `<results_dir>/report.html` atomically (a reader sees the old page or the new one); return its path."""
    results_dir = Path(results_dir)
    html = render(results_dir, records)
    path = results_dir / "report.html"
    write_text_atomic(path, html)
    return path
