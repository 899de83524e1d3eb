"""`python -m bench`: the Hydra app. One job = one (model, data, method, attack, seed) run.

    python -m bench method=watermarkdm attack=full_ft -m
    python -m bench method=none,watermarkdm attack=none,full_ft -m

Configuration errors print one paragraph and exit with status 2 before any work; a run that
fails during its stages is recorded as failed and the sweep goes on (exit status 1 at the end,
whichever launcher ran the jobs: see bench/outcome.py). A run whose record is complete is found
from the config alone (`bench.identity`), before torch and the models are imported, so re-running
a finished sweep takes seconds.
"""
from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import bench.config  # noqa: F401  (registers the ${scale:...} resolver)
from bench.errors import BenchError
from bench.outcome import exit_status, write_outcome

log = logging.getLogger("bench")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from bench.identity import keep_defaults, plan
    from bench.record import read_record, record_path
    output_dir = HydraConfig.get().runtime.output_dir
    try:
        the_plan = plan(cfg)
        record = read_record(record_path(cfg.paths.records_dir, the_plan["run_id"]))
        if record and record["status"] == "complete":
            log.info("%s is complete; nothing to do", the_plan["run_id"])
            keep_defaults(the_plan)
        else:
            from bench.launch import check_job
            check_job(HydraConfig.get().launcher)  # GPUs asked of the launcher but none visible: refused here
            from bench.runner import run  # heavy imports (torch, diffusers) only when there is work
            record = run(cfg, the_plan)
    except BenchError as err:
        print(f"\nerror: {err}\n", file=sys.stderr)
        write_outcome(output_dir, "refused", error=str(err))
        return
    write_outcome(output_dir, "complete" if record["status"] == "complete" else "failed", record["run_id"],
                  record.get("error"))


if __name__ == "__main__":
    main()
    sys.exit(exit_status())
