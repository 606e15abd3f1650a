"""Launchers: where a suite's jobs run.

    local  (default) a process pool on this machine; returns when every row is in
    debug    submitit's DebugExecutor: the Slurm code path, in this process
    slurm    submitit job arrays on a Slurm cluster described by a profile (slurm/*.yaml)

The unit of work is a job (flowbench/launch/job.py): one trained model and the rows that use it,
or the training of a judge made by training (the local one), which the contestants' jobs run beside.
Every launcher runs the same `run_job`, which writes the job's rows to its own shard; `collect`
merges the shards into the leaderboard.
"""
from __future__ import annotations

from pathlib import Path

from flowbench.launch.job import LauncherError

LAUNCHERS = ("local", "debug", "slurm")


def make_launcher(name: str, *, jobs: int, cluster: str | Path | None, out: Path):
    if name == "local":
        if cluster:
            raise LauncherError("--cluster is for --launcher slurm")
        from flowbench.launch.local import LocalLauncher

        return LocalLauncher(jobs=jobs)
    if name in ("debug", "slurm"):
        from flowbench.launch.slurm import SubmititLauncher

        if name == "slurm" and not cluster:
            raise LauncherError("--launcher slurm needs --cluster slurm/<profile>.yaml")
        return SubmititLauncher(name, cluster=cluster, out=out)
    raise LauncherError(f"unknown launcher {name!r} (allowed: {', '.join(LAUNCHERS)})")
