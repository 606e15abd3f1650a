"""Training-time distributions: where in t a family spends its training batches.

A uniform t on [0, 1] spends most batches where the task is hopeless (pure noise) or a copy
(the token is already decided). The references focus the batches on the band where tokens are
decided: KL-Flow (arXiv 2411.16821, config `max_t: 0.3`) trains on t in [0, t_max] only;
DUO (arXiv 2506.10892) restricts the noise level to a band; SD3 / Rectified Flow (arXiv
2403.03206) use a logit-normal t. Both kinds are inverse-CDF maps of a uniform u, drawn
stratified over the batch (u_b = (u + b / B) mod 1), so a batch covers the distribution evenly:

    uniform       t = low + (high - low) u                     density 1 / (high - low) on [low, high]
    logit_normal  t = sigmoid(loc + scale * Phi^-1(u))         density phi((logit t - loc) / scale)
                                                                        / (scale t (1 - t))
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator


class TimeSampling(BaseModel):
    """kind: uniform on [low, high], or logit_normal(loc, scale) (whose support is (0, 1))."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["uniform", "logit_normal"] = "uniform"
    low: float = Field(0.0, ge=0.0, lt=1.0)
    high: float = Field(1.0, gt=0.0, le=1.0)
    loc: float = 0.0
    scale: float = Field(1.0, gt=0.0)

    @model_validator(mode="after")
    def _ordered(self):
        if self.low >= self.high:
            raise ValueError(f"time sampling needs low < high (got {self.low} >= {self.high})")
        return self

    @property
    def t_max(self) -> float:
        """The largest time trained on: samplers of a family trained on [low, high] stop there."""
        return self.high if self.kind == "uniform" else 1.0

    def from_uniform(self, u: torch.Tensor) -> torch.Tensor:
        """The inverse CDF: u in [0, 1) -> t, float64, same shape."""
        u = u.double()
        if self.kind == "uniform":
            return self.low + (self.high - self.low) * u
        z = math.sqrt(2.0) * torch.erfinv((2 * u - 1).clamp(-1 + 1e-15, 1 - 1e-15))
        return torch.sigmoid(self.loc + self.scale * z)

    def density(self, t: torch.Tensor) -> torch.Tensor:
        """The declared density of t (float64, same shape)."""
        t = t.double()
        if self.kind == "uniform":
            inside = (t >= self.low) & (t <= self.high)
            return inside.double() / (self.high - self.low)
        z = (torch.logit(t) - self.loc) / self.scale
        return torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi) / (self.scale * t * (1 - t))

    def sample(self, n: int, *, generator: torch.Generator | None, device=None) -> torch.Tensor:
        """n stratified times (n,) float64: one uniform offset shared by the batch."""
        return self.from_uniform(stratified_uniform(n, generator=generator, device=device))


def stratified_uniform(n: int, *, generator: torch.Generator | None, device=None,
                       dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """u_b = (u + b / n) mod 1 for b = 0..n-1, with one uniform u (drawn in float64) shared by the
    batch: (n,) in [0, 1), one point in each stratum [b / n, (b + 1) / n) up to the shift.

    dtype: the precision of the sum (float32 for the families whose trained models drew their
    times so; a float64 u plus float32 offsets rounds in float32)."""
    u = torch.rand((), generator=generator, device=device, dtype=torch.float64)
    return (u + torch.arange(n, device=device, dtype=dtype) / n) % 1.0
