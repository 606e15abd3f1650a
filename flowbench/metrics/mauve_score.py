"""MAUVE (Pillutla et al., arXiv 2102.01454) of the samples against held-out data.

Both sets are featurized by the harness (flowbench/metrics/features.py) and handed to
`mauve.compute_mauve(p_features=..., q_features=...)` from the package mauve-text: p the
samples, q the first N sequences of the corpus's validation split (N = the row's sample count,
same length). mauve-text then l2-normalises, keeps the PCA components explaining 90% of the
variance, quantizes p and q jointly by k-means into `buckets` clusters (auto: N / 10) and
integrates the divergence frontier with scaling constant c (`scaling`, 5):

    MAUVE = AUC{ (exp(-c KL(Q || R_w)), exp(-c KL(P || R_w))) : R_w = w P + (1 - w) Q }

The estimate is the mean over `kmeans_seeds` quantizations (k-means seeds seed, seed + 1, ...):
on a few hundred points the clustering alone moves MAUVE by a few hundredths (mauve#11).
Interval: each replicate takes one of those quantizations in turn and redraws its two histograms
as multinomials of their own counts (the bootstrap over samples of a histogram), so the interval
holds the clustering's spread and the sampling error; MAUVE is recomputed on each draw and the
percentile interval recentred on the estimate (flowbench/metrics/bootstrap.py).
Floor: MAUVE of N test-split sequences against the same reference, what true data scores.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from flowbench.metrics.base import Metric, MetricError, Samples, register
from flowbench.metrics.bootstrap import LEVEL, shifted_interval
from flowbench.metrics.features import check_features, default_features, features, mean_surprisal

# features "auto": minilm+surprisal on a corpus with an exact likelihood, else minilm
DEFAULTS = {"features": "auto", "scaling": 5.0, "buckets": "auto", "seed": 25, "kmeans_seeds": 5}
REPLICATES = 200


def mauve_of(p: np.ndarray, q: np.ndarray, *, scaling: float, buckets, seed: int):
    import faiss
    import mauve
    from threadpoolctl import threadpool_limits

    # one thread: k-means and the PCA's SVD on a few hundred points gain nothing from more, and
    # threads spinning on a shared CPU made them slow: faiss's OpenMP threads took minutes a call;
    # two OpenBLAS threads took 2.7 CPU-s for a call one thread does in 0.06 s (512 x 416 features,
    # 2-core machine under load), with the same bits
    faiss.omp_set_num_threads(1)
    with threadpool_limits(limits=1, user_api="blas"):
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


def seeded_mauve(p: np.ndarray, q: np.ndarray, *, scaling: float, buckets, seed: int, kmeans_seeds: int,
                 interval_seed: int, replicates: int = REPLICATES, level: float = LEVEL) -> dict[str, Any]:
    """MAUVE averaged over k-means seeds seed .. seed + kmeans_seeds - 1, and its interval: replicate r
    redraws both histograms of quantization r mod kmeans_seeds as multinomials of their counts."""
    outs = [mauve_of(p, q, scaling=scaling, buckets=buckets, seed=seed + i) for i in range(kmeans_seeds)]
    point = float(np.mean([out.mauve for out in outs]))
    rng = np.random.default_rng(np.random.SeedSequence([interval_seed, 0x3A0E]))
    draws = []
    for r in range(replicates):
        out = outs[r % kmeans_seeds]
        draws.append(mauve_from_histograms(rng.multinomial(len(p), out.p_hist) / len(p),
                                           rng.multinomial(len(q), out.q_hist) / len(q), scaling=scaling))
    lo, hi = shifted_interval(np.asarray(draws), point, level=level, bounds=(0.0, 1.0))
    return {"mauve": point, "mauve_lo": lo, "mauve_hi": hi, "mauve_buckets": int(outs[0].num_buckets),
            "per_seed": [float(out.mauve) for out in outs]}


@lru_cache(maxsize=16)
def held_out_samples(corpus, split: str, n: int, cache_dir, judge=None) -> Samples:
    """The first n sequences of a held-out split, scored by `judge` where one is given (once per
    process: the reference's surprisal statistics and its features read the same scores)."""
    available = corpus.available(split)
    if available is not None and available < n:
        raise MetricError(f"metric 'mauve': corpus {corpus.name!r} split {split!r} holds {available} "
                          f"sequences, fewer than the {n} samples it must match")
    tokens = corpus.split(split, n)
    nll, mask = judge.score(tokens) if judge is not None else (None, None)
    return Samples(tokens=tokens, nll=nll, mask=mask, corpus=corpus, judge=judge, cache_dir=cache_dir)


@lru_cache(maxsize=16)
def reference_surprisal(corpus, n: int, cache_dir, judge) -> tuple[float, float]:
    """Mean and sd over the MAUVE reference (first n validation sequences) of each sequence's mean
    per-token NLL under `judge` (computed once per process)."""
    ref = held_out_samples(corpus, "validation", n, cache_dir, judge)
    per_sequence = mean_surprisal(ref.nll, ref.mask)
    return float(per_sequence.mean()), float(per_sequence.std())


def uses_judge(kind: str) -> bool:
    return kind == "minilm+judge-surprisal"


@lru_cache(maxsize=16)
def held_out(corpus, split: str, n: int, kind: str, cache_dir, judge=None) -> np.ndarray:
    """Features of the first n sequences of a held-out split (computed once per process); `judge`
    only for features that read its scores."""
    if not uses_judge(kind):
        return features(kind, held_out_samples(corpus, split, n, cache_dir))
    return features(kind, held_out_samples(corpus, split, n, cache_dir, judge),
                    reference_surprisal=reference_surprisal(corpus, n, cache_dir, judge))


@lru_cache(maxsize=16)
def mauve_floor(corpus, n: int, kind: str, scaling: float, buckets, seed: int, cache_dir,
                kmeans_seeds: int = DEFAULTS["kmeans_seeds"], judge=None) -> float:
    p, q = held_out(corpus, "test", n, kind, cache_dir, judge), held_out(corpus, "validation", n, kind, cache_dir, judge)
    return float(np.mean([mauve_of(p, q, scaling=scaling, buckets=buckets, seed=seed + i).mauve
                          for i in range(kmeans_seeds)]))


@register
class Mauve(Metric):
    name = "mauve"
    higher_is_better = True
    columns = ("mauve", "mauve_floor", "mauve_features", "mauve_samples", "mauve_references",
               "mauve_buckets", "mauve_scaling", "mauve_seed")
    interval = ("mauve",)
    # 2: features minilm+surprisal by default on the embedded language (word order), the estimate
    # and interval over 5 k-means seeds
    version = 2

    def options(self, params: dict, corpus) -> dict[str, Any]:
        unknown = sorted(set(params) - set(DEFAULTS))
        if unknown:
            raise MetricError(f"eval.metric_params.mauve: unknown key {unknown[0]!r} "
                              f"(allowed: {', '.join(DEFAULTS)})")
        opt = {**DEFAULTS, **params}
        seeds = opt["kmeans_seeds"]
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise MetricError(f"eval.metric_params.mauve.kmeans_seeds: must be an integer >= 1, got {seeds!r}")
        if opt["features"] == "auto":
            opt["features"] = default_features(corpus)
        return opt

    def check(self, corpus, params):
        check_features(self.options(params, corpus)["features"], corpus)

    def compute(self, samples: Samples, params: dict | None = None) -> dict[str, Any]:
        opt = self.options(params or {}, samples.corpus)
        n = len(samples.tokens)
        kind = opt["features"]
        judge = samples.judge if uses_judge(kind) else None  # other features: one cache entry for every judge
        if uses_judge(kind) and judge is None:
            raise MetricError(f"metric 'mauve' with features {kind!r} needs the suite's judge")
        q = held_out(samples.corpus, "validation", n, kind, samples.cache_dir, judge)
        reference = reference_surprisal(samples.corpus, n, samples.cache_dir, judge) if judge is not None else None
        p = features(kind, samples, reference_surprisal=reference)
        out = seeded_mauve(p, q, scaling=opt["scaling"], buckets=opt["buckets"], seed=opt["seed"],
                           kmeans_seeds=opt["kmeans_seeds"], interval_seed=samples.seed)
        return {"mauve": out["mauve"], "mauve_lo": out["mauve_lo"], "mauve_hi": out["mauve_hi"],
                "mauve_floor": mauve_floor(samples.corpus, n, opt["features"], opt["scaling"], opt["buckets"],
                                           opt["seed"], samples.cache_dir, opt["kmeans_seeds"], judge),
                "mauve_features": opt["features"], "mauve_samples": len(p), "mauve_references": len(q),
                "mauve_buckets": out["mauve_buckets"], "mauve_scaling": opt["scaling"],
                "mauve_seed": opt["seed"]}
