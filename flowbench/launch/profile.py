"""Cluster profiles (slurm/*.yaml): the resources of every job of a suite, as data.

Keys (all optional): partition, account, qos, constraint, gpus_per_node, cpus_per_task,
tasks_per_node (several tasks train with DDP), mem_gb, timeout_min, max_array_size (larger job
arrays are split), array_parallelism, signal_delay_s (the preemption notice before a time limit),
setup (shell lines run before each job, e.g. `module load`), sbatch (extra `#SBATCH` options as
{option: value}). A misspelled key fails with the allowed list.
"""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flowbench.config import one_line


class ProfileError(ValueError):
    pass


class ClusterProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gpus_per_node: int = Field(0, ge=0)
    cpus_per_task: int = Field(1, ge=1)
    tasks_per_node: int = Field(1, ge=1)
    mem_gb: float | None = Field(None, gt=0)
    timeout_min: int = Field(60, ge=1)
    max_array_size: int = Field(1000, ge=1)
    array_parallelism: int = Field(256, ge=1)
    signal_delay_s: int = Field(90, ge=0)
    setup: list[str] = []
    sbatch: dict[str, str | int | bool] = {}

    def executor_parameters(self) -> dict:
        """Parameters of submitit's AutoExecutor.update_parameters."""
        params = dict(gpus_per_node=self.gpus_per_node, cpus_per_task=self.cpus_per_task,
                      tasks_per_node=self.tasks_per_node, timeout_min=self.timeout_min,
                      slurm_array_parallelism=self.array_parallelism,
                      slurm_signal_delay_s=self.signal_delay_s)
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        optional = dict(slurm_partition=self.partition, slurm_account=self.account, slurm_qos=self.qos,
                        slurm_constraint=self.constraint, slurm_setup=self.setup or None,
                        slurm_additional_parameters=self.sbatch or None)
        return {**params, **{k: v for k, v in optional.items() if v is not None}}


def load_profile(path: str | Path) -> ClusterProfile:
    path = Path(path)
    if not path.exists():
        raise ProfileError(f"cluster profile not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a cluster profile is a mapping of keys to values")
    try:
        return ClusterProfile(**data)
    except ValidationError as err:
        allowed = ", ".join(ClusterProfile.model_fields)
        raise ProfileError(f"{one_line(err, str(path))} (allowed keys: {allowed})") from None
