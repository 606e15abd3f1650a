"""Generative perplexity under a judge, in both conventions of the field."""
from __future__ import annotations

import math

import numpy as np
import torch

from flowbench.metrics.base import Metric, Samples, register


@register
class GenPPL(Metric):
    """nll, mask: (N, M) per-token NLL under the judge and which entries are scored.

      gen_ppl       = exp(sum nll / sum tokens)            corpus level (MDLM / DUO)
      gen_ppl_mean  = mean_n exp(sum_i nll_ni / M_n)      mean of per-sample PPL (SEDD / flow_matching)
      nll_mean      = sum nll / sum tokens                 nats per scored token
      nll_median    = median per-token NLL (the exact judge's NLL is heavy-tailed)
      gen_ppl_floor = gen_ppl of true test-split sequences of the row's N under the same judge,
                      mean over draws with its 5-95% band (flowbench/metrics/floors.py)
    """

    name = "gen_ppl"
    higher_is_better = False
    columns = ("gen_ppl", "gen_ppl_mean", "nll_mean", "nll_median")
    interval = ("gen_ppl",)
    floors = ("gen_ppl",)
    needs_judge = True

    def stats(self, samples: Samples, params: dict) -> dict[str, np.ndarray]:
        nll, mask = samples.nll.double(), samples.mask.bool()
        total, count = (nll * mask).sum(1), mask.sum(1).double()
        return {"nll_sum": total.numpy(), "count": count.numpy(),
                "ppl": (total / count.clamp_min(1)).exp().numpy()}

    def combine(self, stats, samples, params):
        nll_mean = stats["nll_sum"].sum() / stats["count"].sum()
        return {"gen_ppl": math.exp(nll_mean), "gen_ppl_mean": float(stats["ppl"].mean()),
                "nll_mean": float(nll_mean)}

    def compute(self, samples, params=None):
        row = super().compute(samples, params)
        row["nll_median"] = samples.nll.double()[samples.mask.bool()].median().item()
        return row


def gen_ppl(*, tokens: torch.Tensor | None, nll: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """The gen PPL columns of one batch, with the interval of gen_ppl."""
    return GenPPL().compute(Samples(tokens=tokens, nll=nll, mask=mask))
