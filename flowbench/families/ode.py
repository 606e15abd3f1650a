"""Fixed-grid ODE solving for the deterministic samplers.

NFE is the number of velocity (backbone) calls: a solver with k stages per step takes
nfe / k steps on the family's time grid, so `nfe` must be a multiple of k.

Written out rather than called through `torchdiffeq.odeint`: for a (B, L, V) state odeint keeps the
state at every grid time (an (n + 1, B, L, V) output) and takes `y.abs()` of the whole state at
every velocity call only to read its dtype; at the nfe_sweep size (B = 256, L = 32, V = 256,
float64) that made 4 Euler steps about 3.8x slower than the steps themselves
(`python -m flowbench bench`, overhead table). The steps are the textbook ones, as odeint's:
euler, midpoint (explicit), heun (trapezoidal predictor-corrector) and rk4 (the 3/8 rule, odeint's
fixed-grid 'rk4').
"""
from __future__ import annotations

from typing import Callable, Literal

import torch

Solver = Literal["euler", "midpoint", "heun", "rk4"]
STAGES = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def steps_for(nfe: int, solver: str) -> int:
    """Number of grid steps that spend exactly `nfe` velocity calls; ValueError if none does."""
    k = STAGES[solver]
    if nfe % k:
        raise ValueError(f"solver {solver!r} spends {k} calls per step: nfe={nfe} is not a multiple of {k}")
    return nfe // k


def _step(f: Velocity, t0: torch.Tensor, t1: torch.Tensor, y: torch.Tensor, solver: str) -> torch.Tensor:
    """y(t1) from y(t0) by one step: the increment dt * (weighted velocities), added to y."""
    dt = t1 - t0
    k1 = f(t0, y)
    if solver == "euler":
        return y + dt * k1
    if solver == "midpoint":
        return y + dt * f(t0 + dt / 2, y + dt / 2 * k1)
    if solver == "heun":
        k2 = f(t1, y + dt * k1)
        return y + dt / 2 * (k1 + k2)
    k2 = f(t0 + dt / 3, y + dt / 3 * k1)                       # rk4, 3/8 rule
    k3 = f(t0 + 2 * dt / 3, y + dt * (k2 - k1 / 3))
    k4 = f(t1, y + dt * (k1 - k2 + k3))
    return y + dt / 8 * (k1 + 3 * (k2 + k3) + k4)


def solve(velocity: Velocity, x0: torch.Tensor, grid: torch.Tensor, *, solver: str) -> torch.Tensor:
    """Integrate dx/dt = velocity(t, x) from grid[0] to grid[-1] on the given time grid.

    velocity(t, x): t a 0-dim tensor of x0's dtype, x of x0's shape -> dx/dt of x0's shape.
    Returns the state at grid[-1] (only the current state is kept)."""
    if solver not in STAGES:
        raise ValueError(f"unknown solver {solver!r} (solvers: {', '.join(STAGES)})")
    grid = grid.to(device=x0.device, dtype=x0.dtype)
    y = x0
    for k in range(len(grid) - 1):
        y = _step(velocity, grid[k], grid[k + 1], y, solver)
    return y
