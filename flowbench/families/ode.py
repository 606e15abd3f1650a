"""Fixed-grid ODE solving for the deterministic samplers, through `torchdiffeq`.

NFE is the number of velocity (backbone) calls: a solver with k stages per step takes
nfe / k steps on the family's time grid, so `nfe` must be a multiple of k.
"""
from __future__ import annotations

from typing import Callable, Literal

import torch
from torchdiffeq import odeint

Solver = Literal["euler", "midpoint", "heun", "rk4"]
STAGES = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
_TORCHDIFFEQ_NAME = {"euler": "euler", "midpoint": "midpoint", "heun": "heun2", "rk4": "rk4"}


def steps_for(nfe: int, solver: str) -> int:
    """Number of grid steps that spend exactly `nfe` velocity calls; ValueError if none does."""
    k = STAGES[solver]
    if nfe % k:
        raise ValueError(f"solver {solver!r} spends {k} calls per step: nfe={nfe} is not a multiple of {k}")
    return nfe // k


def solve(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor,
          grid: torch.Tensor, *, solver: str) -> torch.Tensor:
    """Integrate dx/dt = velocity(t, x) from grid[0] to grid[-1] on the given time grid.

    velocity(t, x): t a 0-dim tensor, x of x0's shape -> dx/dt of x0's shape.
    Returns the state at grid[-1]."""
    return odeint(velocity, x0, grid.to(x0.dtype), method=_TORCHDIFFEQ_NAME[solver])[-1]
