"""Metrics of a batch of samples: one small module per metric, each registered in METRICS.

    perplexity  gen_ppl (+ gen_ppl_mean, nll_mean, nll_median) under the suite's judge
    entropy     mean per-sample unigram entropy of the generator's ids
    ngram_kl    KL of the samples' unigram / bigram frequencies to the exact marginals, with floors
    mauve       MAUVE against held-out data on MiniLM (+ exact surprisal: the embedded language's
                default), GPT-2 Large or exact features

`score_samples` is the one call that computes every column of a leaderboard row from its
samples; the worker's `evaluate` and `python -m flowbench score` both use it. Formulas and
conventions: docs/metrics.md.
"""
from __future__ import annotations

from pathlib import Path

import torch

from flowbench.metrics.base import FunctionMetric, Metric, MetricError, Samples, metric, register
from flowbench.metrics.entropy import Entropy, entropy
from flowbench.metrics.mauve_score import Mauve
from flowbench.metrics.ngram_kl import NgramKL
from flowbench.metrics.perplexity import GenPPL, gen_ppl
from flowbench.registry import METRICS

__all__ = ["Metric", "FunctionMetric", "MetricError", "Samples", "metric", "register", "entropy",
           "gen_ppl", "selected", "BUILTIN_METRICS", "check_metrics", "score_samples", "METRIC_COLUMNS",
           "SCORE_COLUMNS"]


BUILTIN_METRICS = (GenPPL, Entropy, NgramKL, Mauve)
# the leaderboard's metric columns, in order (a metric from outside adds its own after them)
METRIC_COLUMNS: list[str] = [c for cls in BUILTIN_METRICS for c in cls().all_columns()]
# the columns that score a row (the built-in metrics' columns with an interval), in the order
# reports show them: what the report ranks and tabulates, gives a seed interval and compare tests
SCORE_COLUMNS: tuple[str, ...] = ("gen_ppl", "entropy", "mauve", "unigram_kl", "bigram_kl")


def selected(eval_config, corpus) -> list[str]:
    """Metrics a row computes: `eval.metrics` if the suite names them (each must run on the
    corpus), else every built-in metric the corpus supports (no n-gram KL on real text). A metric
    from outside the package runs where a suite names it: installing one changes no other suite."""
    names = eval_config.metrics
    if names is not None:
        return list(names)
    chosen = []
    for name in sorted(cls.name for cls in BUILTIN_METRICS):
        try:
            METRICS.get(name).check(corpus, dict(eval_config.metric_params.get(name, {})))
        except MetricError:
            continue
        chosen.append(name)
    return chosen


def check_metrics(eval_config, corpus) -> None:
    """Fail before training, in one line naming metric and corpus, on a metric the corpus
    cannot provide or a parameter a metric does not take."""
    unknown = sorted(set(eval_config.metric_params) - set(METRICS.names()))
    if unknown:
        raise MetricError(f"eval.metric_params: unknown metric {unknown[0]!r} (registered: {', '.join(METRICS.names())})")
    for name in eval_config.metrics or []:
        METRICS.get(name)  # a misspelled name fails with "did you mean"
    for name in eval_config.metrics or list(eval_config.metric_params):
        METRICS.get(name).check(corpus, dict(eval_config.metric_params.get(name, {})))


def score_samples(tokens: torch.Tensor, *, corpus, judge, eval_config, seed: int,
                  cache_dir: str | Path | None = None) -> dict:
    """Every metric column of one row: tokens (N, L) are the generator's ids, scored by `judge`
    (its per-token NLL) and compared with `corpus` (held-out data, exact marginals)."""
    nll, mask = judge.score(tokens) if judge is not None else (None, None)
    samples = Samples(tokens=tokens, nll=nll, mask=mask, corpus=corpus, judge=judge, seed=seed,
                      cache_dir=cache_dir)
    row: dict = {}
    for name in selected(eval_config, corpus):
        entry = METRICS.get(name)
        if getattr(entry, "needs_judge", False) and nll is None:
            continue
        row.update(entry.compute(samples, dict(eval_config.metric_params.get(name, {}))))
    return row
