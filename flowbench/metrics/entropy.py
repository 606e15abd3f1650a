"""Per-sample unigram entropy of the generator's own ids."""
from __future__ import annotations

import numpy as np
import torch

from flowbench.metrics.base import Metric, Samples, register


@register
class Entropy(Metric):
    """tokens: (N, L). For each sample, H_n = -sum_v c_v/L log(c_v/L) over its token counts c_v,
    in nats; the column is the mean over samples (the MDLM / DUO convention). entropy_floor
    (with its 5-95% band): the same of true test-split sequences (flowbench/metrics/floors.py)."""

    name = "entropy"
    higher_is_better = True
    columns = ("entropy",)
    interval = ("entropy",)
    floors = ("entropy",)

    def stats(self, samples: Samples, params: dict) -> dict[str, np.ndarray]:
        return {"entropy": per_sample_entropy(samples.tokens).numpy()}

    def combine(self, stats, samples, params):
        return {"entropy": float(stats["entropy"].mean())}


def per_sample_entropy(tokens: torch.Tensor) -> torch.Tensor:
    """(N,) float64 unigram entropy of each row of ids (N, L), in nats."""
    tokens = torch.as_tensor(tokens)
    ordered = tokens.sort(-1).values                                          # (N, L)
    N, L = ordered.shape
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]                          # a new id starts a run
    run = starts.long().cumsum(-1) - 1                                         # run index per entry
    counts = torch.zeros(N, L, dtype=torch.float64).scatter_add_(1, run, torch.ones(N, L, dtype=torch.float64))
    p = counts / L
    return -(p * p.clamp_min(1e-300).log()).sum(-1)


def entropy(*, tokens: torch.Tensor, **_) -> dict[str, float]:
    """Mean per-sample unigram entropy of ids (N, L), in nats."""
    return {"entropy": per_sample_entropy(tokens).mean().item()}
