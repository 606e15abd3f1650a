"""Generative perplexity under a judge, in both conventions of the field."""
from __future__ import annotations

import math

import numpy as np
import torch

from flowbench.config import config_hash
from flowbench.metrics.base import Metric, Samples, register


@register
class GenPPL(Metric):
    """nll, mask: (N, M) per-token NLL under the judge and which entries are scored.

      gen_ppl       = exp(sum nll / sum tokens)            corpus level (MDLM / DUO)
      gen_ppl_mean  = mean_n exp(sum_i nll_ni / M_n)      mean of per-sample PPL (SEDD / flow_matching)
      nll_mean      = sum nll / sum tokens                 nats per scored token
      nll_median    = median per-token NLL (the exact judge's NLL is heavy-tailed)
      gen_ppl_floor = gen_ppl of as many test-split sequences under the same judge (true data)
    """

    name = "gen_ppl"
    higher_is_better = False
    columns = ("gen_ppl", "gen_ppl_mean", "nll_mean", "nll_median", "gen_ppl_floor")
    interval = ("gen_ppl",)
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
        if samples.judge is not None and samples.corpus is not None:
            row["gen_ppl_floor"] = true_gen_ppl(samples.judge, samples.corpus, len(samples.tokens))
        return row


_floors: dict = {}


def _identity(obj) -> str | None:
    """A hash of what `obj` (a judge, a corpus) says identifies it, or None if it says nothing;
    unlike id(), it is never handed on to another object."""
    describe = getattr(obj, "describe", None)
    if describe is None:
        return None
    kind = type(obj)
    return config_hash({"class": f"{kind.__module__}.{kind.__qualname__}",
                        "version": getattr(kind, "version", None), "describe": describe()}, n=64)


def true_gen_ppl(judge, corpus, n: int) -> float | None:
    """gen_ppl of the first n test-split sequences under `judge`: once per judge, corpus and n as
    they describe themselves; every time for objects that do not."""
    judge_id, corpus_id = _identity(judge), _identity(corpus)
    if judge_id is None or corpus_id is None:
        return _true_gen_ppl(judge, corpus, n)
    key = (judge_id, corpus_id, n)
    if key not in _floors:
        _floors[key] = _true_gen_ppl(judge, corpus, n)
    return _floors[key]


def _true_gen_ppl(judge, corpus, n: int) -> float | None:
    available = corpus.available("test")
    true = corpus.split("test", min(n, available) if available is not None else n)
    if len(true) == 0:
        return None
    nll, mask = judge.score(true)
    return math.exp((nll.double() * mask).sum().item() / mask.sum().item())


def gen_ppl(*, tokens: torch.Tensor | None, nll: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """The gen PPL columns of one batch, with the interval of gen_ppl."""
    return GenPPL().compute(Samples(tokens=tokens, nll=nll, mask=mask))
