"""`python -m bench`: the Hydra app. One job = one (model, data, method, attack, seed) run.

    python -m bench method=watermarkdm attack=full_ft -m
    python -m bench method=none,watermarkdm attack=none,full_ft -m

Configuration errors print one paragraph and exit with status 2 before any work; a run that
fails during its stages is recorded as failed and the sweep goes on (exit status 1 at the end,
whichever launcher ran the jobs: see bench/sweep/outcome.py). A run whose record is complete is found
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
from bench.sweep.outcome import exit_status, write_outcome

log = logging.getLogger("bench")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from bench.identity import keep_defaults, plan
    from bench.record import claimed, read_record, record_path
    output_dir = HydraConfig.get().runtime.output_dir
    try:
        the_plan = plan(cfg)
        rid = the_plan["run_id"]
        record = read_record(record_path(cfg.paths.records_dir, rid))
        if record and record["status"] == "complete":
            log.info("%s is complete; nothing to do", rid)
            keep_defaults(the_plan)
        else:
            from bench.sweep.launch import check_job
            check_job(HydraConfig.get().launcher)  # GPUs asked of the launcher but none visible: refused here
            with claimed(cfg.paths.records_dir, rid) as mine:
                if not mine:  # a second worker of the same sweep runs it now, and writes its record
                    log.info("%s is running in another process; skipped here (that process writes its record)", rid)
                    write_outcome(output_dir, "elsewhere", rid)
                    return
                from bench.run.runner import run  # heavy imports (torch, diffusers) only when there is work
                record = run(cfg, the_plan)
    except BenchError as err:
        print(f"\nerror: {err}\n", file=sys.stderr)
        write_outcome(output_dir, "refused", error=str(err))
        return
    write_outcome(output_dir, "complete" if record["status"] == "complete" else "failed", record["run_id"],
                  record.get("error"))


def check_choices(argv: list[str]) -> str | None:
    """The one-paragraph error for a config-group choice that names no YAML (`method=nosuch`), or None.

    Hydra's own message for it exits with status 1 before the app runs; the harness promises 2 for bad input."""
    import re
    from pathlib import Path

    from bench.identity import CONF
    folders = [CONF] + [Path(m) for a in argv if a.startswith("hydra.searchpath")
                        for m in re.findall(r"file://([^,\]]+)", a)]
    for arg in argv:
        if re.match(r"\+{0,2}search=", arg):
            return (f"{arg!r}: conf/search/ holds search spaces, which `python -m bench` does not run. Run one with "
                    f"`python -m bench.tools.search {arg.split('=', 1)[1]} method=NAME` (docs/methods.md, \"The "
                    "worst-case attacker\").")
        m = re.fullmatch(r"\+{0,2}(model|data|method|attack|metrics|logger|experiment)=([\w,.-]+)", arg)
        if not m:
            continue  # not a group choice, or a sweep expression (glob(...), choice(...)) that Hydra checks
        group, names = m.group(1), m.group(2).split(",")
        known = sorted({p.stem for f in folders for p in (f / group).glob("*.yaml")})
        unknown = [n for n in names if n not in known]
        if unknown:
            return (f"{group}={','.join(unknown)} names no config: conf/{group}/ has {', '.join(known)}. Pick one "
                    f"of those (python -m bench --help lists every group), or add conf/{group}/{unknown[0]}.yaml.")
    return None


if __name__ == "__main__":
    problem = check_choices(sys.argv[1:])
    if problem:
        print(f"\nerror: {problem}\n", file=sys.stderr)
        sys.exit(2)
    main()
    sys.exit(exit_status())
