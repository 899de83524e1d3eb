"""How each job of a run or sweep ended, and the exit status of the command that launched them.

Every job writes `outcome.json` into its Hydra output folder: `complete`, `failed` (recorded in
its record, the sweep went on), `refused` (a configuration error, nothing ran) or `elsewhere` (another
process held the run and writes its record: not an error). With the basic
launcher the jobs run in the launching process, but with submitit (SLURM, local) they run
elsewhere; reading the sweep folder's outcome files is what lets the launching process exit
non-zero, and say which jobs failed, either way.
"""
from __future__ import annotations

import json
from pathlib import Path

from bench.cache import write_json_atomic

OUTCOME = "outcome.json"
EXIT = {"complete": 0, "failed": 1, "refused": 2}
ended: dict[str, int] = {"failed": 0, "refused": 0}  # jobs of this process that did not complete


def write_outcome(output_dir: str | Path | None, status: str, run_id: str | None = None, error: str | None = None) -> None:
    """Note how this job ended (in its output folder, when it has one) and count it in this process."""
    if status in ended:
        ended[status] += 1
    if output_dir:
        write_json_atomic(Path(output_dir) / OUTCOME, {"status": status, "run_id": run_id, "error": error})


def sweep_outcomes(sweep_dir: str | Path) -> list[dict]:
    """The outcome of every job that wrote one under `sweep_dir` (one folder per job)."""
    return [json.loads(p.read_text()) | {"job": p.parent.name} for p in sorted(Path(sweep_dir).glob(f"*/{OUTCOME}"))]


def adopt_sweep(sweep_dir: str | Path) -> str | None:
    """Make this process's counts those of the sweep's jobs; return a summary line if any did not complete."""
    outcomes = sweep_outcomes(sweep_dir)
    for status in ended:
        ended[status] = sum(o["status"] == status for o in outcomes)
    bad = [o for o in outcomes if o["status"] not in ("complete", "elsewhere")]
    if not bad:
        return None
    lines = [f"{len(bad)} of {len(outcomes)} jobs did not complete:"]
    lines += [f"  job {o['job']}: {o['status']} {o['run_id'] or ''}: {next(iter((o['error'] or '').splitlines()), '')[:200]}"
              for o in bad]
    return "\n".join(lines)


def exit_status() -> int:
    """2 if any job was refused, else 1 if any failed, else 0."""
    return EXIT["refused"] if ended["refused"] else EXIT["failed"] if ended["failed"] else 0
