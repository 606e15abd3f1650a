"""What true data scores at a row's sample count: a distribution over draws, not one number.

A plug-in statistic of N samples moves with N even on true data (the bigram KL of true
sequences is about 0.64 nats at N = 256 and 0.14 at N = 2048), so a row is read against the
same statistic of true held-out data at its own N. For each metric column in `Metric.floors`:

    <col>_floor      mean over FLOOR_DRAWS draws of N true test-split sequences
    <col>_floor_lo   5% quantile of those draws
    <col>_floor_hi   95% quantile

The draws are disjoint where the split holds N * FLOOR_DRAWS sequences (the embedded language
makes any number); else each draw is N sequences without replacement from the whole split
(the draws then overlap, and the band is narrower than fresh data's by about sqrt(1 - N / pool)).
A judge may cap the pool it scores (`Judge.floor_pool`, in multiples of N: GPT-2 Large on a CPU).
Each draw is the metric's own `combine` on the per-sequence `stats` of its N sequences, so the
pool is scored once. Values are cached per (corpus, judge, N, metric, version, params) under
<cache>/floors/ and in the process, keyed by a hash of what those describe (Judge.describe,
Corpus.describe and the corpus's first test sequences), never by id(): stable across processes.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

FLOOR_DRAWS = 100
BAND = (0.05, 0.95)
FORMAT = 1  # bump when the floor computation changes: it enters the cache key

_memo: dict[str, dict] = {}


def floor_columns(metric, samples, params: dict, *, draws: int = FLOOR_DRAWS) -> dict[str, float]:
    """{<col>_floor, <col>_floor_lo, <col>_floor_hi} for each of metric.floors at the samples'
    N; empty without a corpus (or a judge, for a metric that reads one)."""
    corpus, judge = samples.corpus, samples.judge
    if not metric.floors or corpus is None or (metric.needs_judge and judge is None):
        return {}
    n = len(samples.tokens)
    identity = {"format": FORMAT, "corpus": corpus.describe(), "corpus_version": getattr(corpus, "version", 1),
                "fingerprint": fingerprint(corpus),
                "judge": judge_identity(judge) if metric.needs_judge else None, "n": n, "draws": draws,
                "metric": metric.name, "version": metric.version, "params": params}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:24]
    path = Path(samples.cache_dir) / "floors" / f"{key}.json" if samples.cache_dir is not None else None
    if key not in _memo:
        if path is not None and path.exists():
            _memo[key] = json.loads(path.read_text())["columns"]
        else:
            _memo[key] = _compute(metric, samples, params, n=n, draws=draws)
    if path is not None and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"identity": identity, "columns": _memo[key]}, sort_keys=True, indent=1))
        tmp.replace(path)
    return dict(_memo[key])


def fingerprint(corpus) -> str:
    """A hash of the first test sequences: tells apart corpora whose description is the same
    (a language built from tables has no seed)."""
    available = corpus.available("test")
    head = corpus.split("test", 64 if available is None else min(64, available))
    return hashlib.sha256(head.numpy().tobytes()).hexdigest()[:16]


def judge_identity(judge) -> dict:
    """What the judge says decides its scores (Judge.describe), less where its cache lives."""
    describe = getattr(judge, "describe", None)
    if describe is None:
        raise TypeError(f"judge {type(judge).__name__}: a true-data floor needs judge.describe() to cache it")
    return {k: v for k, v in describe().items() if k != "cache_dir"}


def draw_indices(pool: int, n: int, draws: int, *, seed: int = 0) -> np.ndarray:
    """(draws, n) row indices into a pool of true sequences: disjoint blocks where the pool holds
    them all, else independent draws of n without replacement."""
    if pool >= n * draws:
        return np.arange(n * draws).reshape(draws, n)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xF100]))
    return np.stack([rng.choice(pool, size=n, replace=False) for _ in range(draws)])


def _compute(metric, samples, params: dict, *, n: int, draws: int) -> dict[str, float]:
    corpus, judge = samples.corpus, samples.judge
    available = corpus.available("test")
    cap = getattr(judge, "floor_pool", None) if metric.needs_judge else None
    pool = n * draws
    if available is not None:
        pool = min(pool, available)
    if cap is not None:
        pool = min(pool, cap * n)
    n = min(n, pool)  # a split smaller than the row: the floor at what it holds
    if n == 0:
        return {}
    tokens = corpus.split("test", pool)
    nll, mask = judge.score(tokens) if metric.needs_judge else (None, None)
    # the row's own Samples class (flowbench/metrics/base.py), holding true data
    true = type(samples)(tokens=tokens, nll=nll, mask=mask, corpus=corpus, judge=judge, seed=samples.seed,
                   cache_dir=samples.cache_dir)
    stats = metric.stats(true, params)
    values = {c: [] for c in metric.floors}
    for idx in draw_indices(pool, n, draws):
        out = metric.combine({k: v[idx] for k, v in stats.items()}, true, params)
        for c in metric.floors:
            values[c].append(out[c])
    row = {}
    for c, v in values.items():
        v = np.asarray(v, dtype=float)
        lo, hi = np.quantile(v, BAND)
        row[f"{c}_floor"], row[f"{c}_floor_lo"], row[f"{c}_floor_hi"] = float(v.mean()), float(lo), float(hi)
    return row
