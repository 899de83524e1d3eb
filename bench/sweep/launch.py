"""GPUs asked of a launcher that cannot give them are refused before any job starts.

`hydra.launcher.gpus_per_node` is a request to the launcher: SLURM allocates that many GPUs per
job on its node (submitit writes `#SBATCH --gpus-per-node=N`), the local submitit launcher hands
out this machine's devices, and Hydra's basic launcher (the default, jobs in this process)
allocates nothing. So a GPU request is refused, in one paragraph and with exit status 2, when
* the launcher is the basic one (it runs jobs here and gives no GPUs), or
* the launcher is `local` and this machine has fewer CUDA devices than asked for;
before any job is launched (`GPUCheck`, a Hydra callback in conf/config.yaml), and, for jobs that
run elsewhere (SLURM), in the job itself (`check_job`) when it sees no CUDA device although its
launcher asked for one. Jobs use CUDA whenever they see it (`device: auto`), and as many CPU threads as
their launcher's `cpus_per_task` (`job_threads`; an OMP_NUM_THREADS you set wins).
"""
from __future__ import annotations

import os
import sys

from hydra.experimental.callback import Callback

from bench.errors import ConfigError


def _kind(launcher) -> str:
    return str(launcher.get("_target_", "")).rsplit(".", 1)[-1]


def launcher_problem(launcher) -> str | None:
    """Why this launcher cannot give the GPUs its config asks for (None: it can, or none are asked)."""
    gpus = launcher.get("gpus_per_node") or 0
    if not gpus:
        return None
    kind = _kind(launcher)
    if kind == "SlurmLauncher":
        return None  # allocated on the node; the job checks it sees them (check_job)
    if kind != "LocalLauncher":
        return (f"hydra.launcher.gpus_per_node={gpus} asks for GPUs, but the launcher is {kind or 'unknown'}, which runs "
                "every job in this process and allocates no GPUs. Drop the setting (a job uses CUDA whenever this "
                "machine has it: device=auto), or launch with hydra/launcher=local (this machine's GPUs) or "
                "hydra/launcher=slurm (a cluster's).")
    import torch

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have < gpus:
        return (f"hydra.launcher.gpus_per_node={gpus} asks for {gpus} GPU(s) per job, but hydra/launcher=local runs the "
                f"jobs on this machine, which has {have} CUDA device(s) visible. Use hydra.launcher.gpus_per_node="
                f"{have} (0 runs the jobs on the CPU), or submit to a GPU cluster with hydra/launcher=slurm "
                "hydra.launcher.partition=<gpu partition>.")
    return None


def check_job(launcher) -> None:
    """In a job: refuse to run on the CPU when its launcher asked for GPUs and none is visible, and keep the job's
    CPU threads to what the launcher allocated (`job_threads`)."""
    problem = launcher_problem(launcher)
    if problem:
        raise ConfigError(problem)
    job_threads(launcher)
    gpus = launcher.get("gpus_per_node") or 0
    if gpus:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"hydra.launcher.gpus_per_node={gpus}: this job was given GPUs by {_kind(launcher)}, but "
                              "it sees no CUDA device (torch.cuda.is_available() is False; CUDA_VISIBLE_DEVICES="
                              "set?). Check the partition's GPUs (sinfo -o '%P %G') and the CUDA driver on the node, "
                              "or run on CPUs with hydra.launcher.gpus_per_node=0.")


def job_threads(launcher) -> int | None:
    """Set torch's intra-op threads (and OMP_NUM_THREADS, which the record's runtime reports) to the launcher's
    `cpus_per_task`, unless OMP_NUM_THREADS is set already. Without it every job of a submitit sweep starts one thread
    per core of the node: two one-CPU array tasks on a two-core node then ran a full_ft step in 7 s instead of 0.08 s
    (threads spinning against each other). Returns the thread count set, or None."""
    cpus = launcher.get("cpus_per_task")
    if not cpus or os.environ.get("OMP_NUM_THREADS"):
        return None
    import torch

    os.environ["OMP_NUM_THREADS"] = str(int(cpus))
    torch.set_num_threads(int(cpus))
    return int(cpus)


class GPUCheck(Callback):
    """Hydra callback: refuse, before any job starts, a GPU request the launcher cannot meet."""

    def _check(self, config) -> None:
        problem = launcher_problem(config.hydra.launcher)
        if problem:
            print(f"\nerror: {problem}\n", file=sys.stderr)
            sys.exit(2)

    def on_run_start(self, config, **kwargs) -> None:
        self._check(config)

    def on_multirun_start(self, config, **kwargs) -> None:
        self._check(config)
