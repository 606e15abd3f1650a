"""KL between the samples' n-gram frequencies and the embedded language's exact marginals.

    unigram_kl = sum_a f(a) log(f(a) / p(a))          f: the samples' pooled unigram frequencies
    bigram_kl  = sum_ab f(a, b) log(f(a, b) / p(a, b))   over adjacent pairs (x_i, x_{i+1})

p(a) and p(a, b) are the language's exact marginals averaged over positions
(HMMLanguage.ngram_marginals). The direction KL(f || p) is finite (the language gives every
token and pair positive mass) and punishes collapse: a generator that puts its samples on a set
of true mass m pays at least log(1 / m), so repeating a likely word, or AR at temperature 0.1,
cannot score below true data. With finitely many tokens even true samples score above zero,
by an amount that shrinks with N: `<col>_floor` (with its 5-95% band, flowbench/metrics/floors.py)
is the distribution of the statistic over draws of true test-split sequences of the same number
and length as the row's samples, what a perfect generator scores.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from flowbench.metrics.base import Metric, Samples, register


def ngram_ids(tokens: torch.Tensor, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Unigram ids (N, L) and bigram ids a * V + b (N, L - 1) of ids (N, L)."""
    t = torch.as_tensor(tokens).long()
    return t.numpy(), (t[:, :-1] * vocab_size + t[:, 1:]).numpy()


def kl_to(ids: np.ndarray, log_p: np.ndarray) -> float:
    """KL(f || p) in nats of the empirical frequencies f of `ids` (any shape) to p (flat log)."""
    if ids.size == 0:  # L = 1 has no pairs
        return float("nan")
    counts = np.bincount(ids.reshape(-1), minlength=len(log_p))
    seen = counts > 0
    f = counts[seen] / counts.sum()
    return float((f * (np.log(f) - log_p[seen])).sum())


@lru_cache(maxsize=8)
def _marginals(corpus) -> tuple[np.ndarray, np.ndarray]:
    unigram, bigram = corpus.ngram_marginals()
    return unigram.log().numpy(), bigram.reshape(-1).log().numpy()


@register
class NgramKL(Metric):
    name = "ngram_kl"
    higher_is_better = False
    columns = ("unigram_kl", "bigram_kl")
    interval = ("unigram_kl", "bigram_kl")
    floors = ("unigram_kl", "bigram_kl")
    needs_exact = True

    def check(self, corpus, params):
        super().check(corpus, params)
        if not hasattr(corpus, "ngram_marginals"):
            from flowbench.metrics.base import MetricError

            raise MetricError(f"metric 'ngram_kl' needs a corpus with exact n-gram marginals; "
                              f"corpus {corpus.name!r} has none")

    def stats(self, samples: Samples, params: dict) -> dict[str, np.ndarray]:
        uni, bi = ngram_ids(samples.tokens, samples.corpus.vocab_size)
        return {"uni": uni, "bi": bi}

    def combine(self, stats, samples, params):
        log_uni, log_bi = _marginals(samples.corpus)
        return {"unigram_kl": kl_to(stats["uni"], log_uni), "bigram_kl": kl_to(stats["bi"], log_bi)}
