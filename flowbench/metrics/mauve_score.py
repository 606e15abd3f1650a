"""MAUVE (Pillutla et al., arXiv 2102.01454) of the samples against held-out data.

Both sets are featurized by the harness (flowbench/metrics/features.py) and handed to
`mauve.compute_mauve(p_features=..., q_features=...)` from the package mauve-text: p the
samples, q the first N sequences of the corpus's validation split (N = the row's sample count,
same length). mauve-text then l2-normalises, keeps the PCA components explaining 90% of the
variance, quantizes p and q jointly by k-means into `buckets` clusters (auto: N / 10) and
integrates the divergence frontier with scaling constant c (`scaling`, 5):

    MAUVE = AUC{ (exp(-c KL(Q || R_w)), exp(-c KL(P || R_w))) : R_w = w P + (1 - w) Q }

Interval: the quantization fixed, the two histograms are redrawn as multinomials of their own
counts (the bootstrap over samples of a histogram), MAUVE is recomputed on each draw, and the
percentile interval is recentred on the estimate (flowbench/metrics/bootstrap.py).
Floor: MAUVE of N test-split sequences against the same reference, what true data scores.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from flowbench.metrics.base import Metric, MetricError, Samples, register
from flowbench.metrics.bootstrap import LEVEL, shifted_interval
from flowbench.metrics.features import check_features, features

DEFAULTS = {"features": "minilm", "scaling": 5.0, "buckets": "auto", "seed": 25}
REPLICATES = 200


def mauve_of(p: np.ndarray, q: np.ndarray, *, scaling: float, buckets, seed: int):
    import faiss
    import mauve

    # one thread: k-means on a few hundred points gains nothing from more, and OpenMP threads
    # spinning on a shared CPU made one call take minutes
    faiss.omp_set_num_threads(1)
    return mauve.compute_mauve(p_features=p, q_features=q, num_buckets=buckets,
                               mauve_scaling_factor=scaling, seed=seed, verbose=False)


def mauve_from_histograms(p_hist: np.ndarray, q_hist: np.ndarray, *, scaling: float) -> float:
    """MAUVE of two histograms over the same buckets, as mauve-text computes it."""
    from mauve.compute_mauve import get_divergence_curve_for_multinomials
    from sklearn.metrics import auc

    weights = np.linspace(1e-6, 1 - 1e-6, 25)
    x, y = get_divergence_curve_for_multinomials(p_hist, q_hist, weights, scaling).T
    i, j = np.argsort(x), np.argsort(y)
    return float(0.5 * (auc(x[i], y[i]) + auc(y[j], x[j])))


def histogram_interval(p_hist, q_hist, *, n_p: int, n_q: int, scaling: float, seed: int,
                       replicates: int = REPLICATES, level: float = LEVEL) -> tuple[float, float]:
    point = mauve_from_histograms(p_hist, q_hist, scaling=scaling)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x3A0E]))
    draws = [mauve_from_histograms(rng.multinomial(n_p, p_hist) / n_p, rng.multinomial(n_q, q_hist) / n_q,
                                   scaling=scaling) for _ in range(replicates)]
    return shifted_interval(np.asarray(draws), point, level=level, bounds=(0.0, 1.0))


@lru_cache(maxsize=16)
def held_out(corpus, split: str, n: int, kind: str, cache_dir) -> np.ndarray:
    """Features of the first n sequences of a held-out split (computed once per process)."""
    available = corpus.available(split)
    if available is not None and available < n:
        raise MetricError(f"metric 'mauve': corpus {corpus.name!r} split {split!r} holds {available} "
                          f"sequences, fewer than the {n} samples it must match")
    tokens = corpus.split(split, n)
    return features(kind, Samples(tokens=tokens, nll=None, mask=None, corpus=corpus, cache_dir=cache_dir))


@lru_cache(maxsize=16)
def mauve_floor(corpus, n: int, kind: str, scaling: float, buckets, seed: int, cache_dir) -> float:
    return float(mauve_of(held_out(corpus, "test", n, kind, cache_dir),
                          held_out(corpus, "validation", n, kind, cache_dir),
                          scaling=scaling, buckets=buckets, seed=seed).mauve)


@register
class Mauve(Metric):
    name = "mauve"
    higher_is_better = True
    columns = ("mauve", "mauve_floor", "mauve_features", "mauve_samples", "mauve_references",
               "mauve_buckets", "mauve_scaling", "mauve_seed")
    interval = ("mauve",)

    def options(self, params: dict) -> dict[str, Any]:
        unknown = sorted(set(params) - set(DEFAULTS))
        if unknown:
            raise MetricError(f"eval.metric_params.mauve: unknown key {unknown[0]!r} "
                              f"(allowed: {', '.join(DEFAULTS)})")
        return {**DEFAULTS, **params}

    def check(self, corpus, params):
        check_features(self.options(params)["features"], corpus)

    def compute(self, samples: Samples, params: dict | None = None) -> dict[str, Any]:
        opt = self.options(params or {})
        n = len(samples.tokens)
        q = held_out(samples.corpus, "validation", n, opt["features"], samples.cache_dir)
        p = features(opt["features"], samples)
        out = mauve_of(p, q, scaling=opt["scaling"], buckets=opt["buckets"], seed=opt["seed"])
        lo, hi = histogram_interval(out.p_hist, out.q_hist, n_p=len(p), n_q=len(q),
                                    scaling=opt["scaling"], seed=samples.seed)
        return {"mauve": float(out.mauve), "mauve_lo": lo, "mauve_hi": hi,
                "mauve_floor": mauve_floor(samples.corpus, n, opt["features"], opt["scaling"],
                                           opt["buckets"], opt["seed"], samples.cache_dir),
                "mauve_features": opt["features"], "mauve_samples": len(p), "mauve_references": len(q),
                "mauve_buckets": int(out.num_buckets), "mauve_scaling": opt["scaling"],
                "mauve_seed": opt["seed"]}
