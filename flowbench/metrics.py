"""Metrics of a batch of samples: registered functions returning named numbers.

Each metric takes the generator's token ids and the judge's per-token NLL (with a mask of the
scored tokens) and returns a dict of columns. `higher_is_better` is recorded for plots/tables.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from flowbench.registry import METRICS


@dataclass(frozen=True)
class Metric:
    fn: Callable[..., dict[str, float]]
    higher_is_better: bool
    version: int = 1

    def __call__(self, **kw) -> dict[str, float]:
        return self.fn(**kw)


def metric(name: str, *, higher_is_better: bool, version: int = 1):
    def wrap(fn):
        METRICS.register(name)(Metric(fn=fn, higher_is_better=higher_is_better, version=version))
        return fn

    return wrap


@metric("gen_ppl", higher_is_better=False)
def gen_ppl(*, tokens: torch.Tensor, nll: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Generative perplexity under a judge, both conventions.

    nll, mask: (N, M) per-token NLL under the judge and which entries are scored.
      gen_ppl       = exp(sum nll / sum tokens)            corpus level (MDLM / DUO)
      gen_ppl_mean  = mean_n exp(sum_i nll_ni / M_n)      mean of per-sample PPL (SEDD / flow_matching)
      nll_median    = median per-token NLL (the exact judge's NLL is heavy-tailed)
    """
    nll, mask = nll.double(), mask.bool()
    total = (nll * mask).sum()
    count = mask.sum()
    per_sample = (nll * mask).sum(1) / mask.sum(1).clamp_min(1)
    return {"gen_ppl": math.exp(total / count), "gen_ppl_mean": per_sample.exp().mean().item(),
            "nll_mean": (total / count).item(), "nll_median": nll[mask].median().item()}


@metric("entropy", higher_is_better=True)
def entropy(*, tokens: torch.Tensor, **_) -> dict[str, float]:
    """Per-sample unigram entropy of the generator's own ids, in nats, averaged over samples.

    tokens: (N, L). For each sample, H = -sum_v c_v/L log(c_v/L) over its token counts c_v."""
    values = []
    for row in tokens:
        _, counts = torch.unique(row, return_counts=True)
        p = counts.double() / counts.sum()
        values.append(-(p * p.log()).sum())
    return {"entropy": torch.stack(values).mean().item()}
