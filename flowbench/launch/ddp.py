"""DDP for a job launched with several tasks (profile `tasks_per_node` > 1): every task joins one
process group and trains its slice of each global batch (flowbench/trainer.py); rank 0 saves the
checkpoints and evaluates. gloo on the CPU, NCCL on GPUs (one GPU per task)."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_distributed(env=None) -> tuple[int, int]:
    """Join the process group described by `env` (submitit's TorchDistributedEnvironment, whose
    export() sets MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK) or by those variables
    already set (torchrun); returns (rank, world size)."""
    if env is not None:
        env.export()
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()
