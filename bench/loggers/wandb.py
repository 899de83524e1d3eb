"""Weights & Biases logging: one run per job, one aggregate run per sweep (`logger=wandb`).

A job's run (group = sweep name, job_type "run", name method-attack-seed) gets the resolved
config, the record's metrics as summary, the robustness and LMC curves as tables with line
plots, and a base / watermarked / attacked sample grid read from the cache. The aggregate run
(job_type "leaderboard") gets the leaderboard as a table and leaderboard.csv as an artifact.
`mode: offline` writes under `dir` and needs no account (`wandb sync` uploads later).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

log = logging.getLogger(__name__)


def cached_samples(cache_dir: Path, address: str, seed: int) -> torch.Tensor | None:
    """Sample images (uint8 N x 3 x H x W) already generated for the model `address`, if any."""
    for key_file in sorted(Path(cache_dir).glob("samples/*/key.json")):
        key = json.loads(key_file.read_text())["key"]
        if key["model"] == address and key["seed"] == seed:
            return load_file(str(key_file.parent / "samples.safetensors"))["images"]
    return None


def sample_grid(cache_dir: Path, models: dict, seed: int, n: int = 4) -> tuple[torch.Tensor, list[str]] | None:
    """One row of `n` cached samples per model ({label: address}); None if a model has none cached."""
    rows, labels = [], []
    for label, address in models.items():
        images = cached_samples(cache_dir, address, seed)
        if images is None:
            return None
        rows.append(torch.cat(list(images[:n]), dim=2))
        labels.append(label)
    return torch.cat(rows, dim=1), labels


class WandbLogger:
    """Logs records and leaderboards to wandb; holds only settings, so it pickles."""

    def __init__(self, project: str = "wmbench", group: str | None = None, mode: str = "offline",
                 dir: str = "wandb", entity: str | None = None, tags: list | None = None):
        self.settings = {"project": project, "group": group, "mode": mode, "dir": dir, "entity": entity,
                         "tags": list(tags or [])}

    def _init(self, **kwargs):
        import wandb
        Path(self.settings["dir"]).mkdir(parents=True, exist_ok=True)
        return wandb.init(**self.settings, reinit="create_new", **kwargs)

    def log_record(self, record: dict, models: dict | None = None, cache_dir: Path | None = None) -> None:
        """One wandb run for one record; a wandb error is logged, never fails the job (the record is written)."""
        try:
            self._log_record(record, models, cache_dir)
        except Exception:  # noqa: BLE001
            log.exception("wandb logging failed for %s", record["run_id"])

    def _log_record(self, record: dict, models: dict | None, cache_dir: Path | None) -> None:
        """`models` ({label: address}) selects the models of the sample grid."""
        import wandb
        name = f"{record['method']}-{record['attack']}-s{record['seed']}"
        with self._init(job_type="run", name=name, config=record["config"]) as run:
            run.summary.update({"status": record["status"], "run_id": record["run_id"],
                                "slurm_job_id": record["provenance"].get("slurm_job_id")})
            if record["status"] != "complete":
                run.summary["error"] = record.get("error")
                return
            run.summary.update({k: m["value"] for k, m in record["metrics"].items() if m["value"] is not None})
            for curve, points in record["curves"].items():
                run.log(self._curve(curve, points))
            grid = sample_grid(cache_dir, models, record["seed"]) if models and cache_dir else None
            if grid is not None:
                images, labels = grid
                run.log({"samples": wandb.Image(images.permute(1, 2, 0).numpy(), caption=" / ".join(labels))})

    @staticmethod
    def _curve(name: str, points) -> dict:
        """A table and line plot from a list of dicts (robustness) or a dict of lists (LMC)."""
        import wandb
        if isinstance(points, dict):
            points = {k: v for k, v in points.items() if v}  # e.g. no watermark loss without a watermark
            columns = list(points)
            rows = [list(r) for r in zip(*points.values())]
        else:
            columns = list(points[0]) if points else []
            rows = [[p.get(c) for c in columns] for p in points]
        table = wandb.Table(columns=columns, data=rows)
        x = columns[0]
        plots = {f"{name}/{y}": wandb.plot.line(table, x, y, title=f"{name}: {y}") for y in columns[1:]
                 if all(isinstance(r[columns.index(y)], (int, float)) for r in rows)}
        return {f"{name}/table": table, **plots}

    def log_leaderboard(self, results_dir: Path) -> None:
        """The aggregate run: the leaderboard as a table, leaderboard.csv as an artifact."""
        import pandas as pd
        import wandb
        csv = Path(results_dir) / "leaderboard.csv"
        if not csv.is_file():
            return
        df = pd.read_csv(csv)
        with self._init(job_type="leaderboard", name="leaderboard") as run:
            run.log({"leaderboard": wandb.Table(dataframe=df.astype(object).where(df.notna(), None))})
            artifact = wandb.Artifact(f"leaderboard-{run.group or 'sweep'}".replace("/", "-"), type="leaderboard")
            artifact.add_file(str(csv))
            run.log_artifact(artifact)
