"""Row keys: a hash of what produces a row (its model's identity, its sampler, its seeds, the
evaluation settings and the versions of the metrics the suite computes)."""
from __future__ import annotations

from flowbench.config import Suite, config_hash
from flowbench.metrics import selected
from flowbench.plan import Point, make_corpus
from flowbench.registry import JUDGES, METRICS
from flowbench.worker.checkpoints import cache_root


def row_key_function(suite: Suite, *, corpus=None):
    """point (, older versions) -> its row key: a hash of what produces the row. The versions of
    the metrics the suite computes enter it, no other metric's, so installing a metric changes
    no key of a suite that does not use it (`corpus`: the suite's, built here if not given)."""
    judge_cls = JUDGES.get(suite.eval.judge)
    if corpus is None and suite.eval.metrics is None:  # the default choice depends on the corpus
        corpus = make_corpus(suite, cache_dir=cache_root())
    # compile only where it is on, so the keys of rows from before it was a choice stay valid;
    # the sampling seeds and the sample count and batch size are the point's own (below)
    skip = {"device", "sample_seeds", "num_samples", "batch_size"} | (set() if suite.eval.compile else {"compile"})
    eval_ident = {**suite.eval.model_dump(exclude=skip),
                  "judge_params": {**judge_cls.pinned, **suite.eval.judge_params},
                  "metrics": {m: METRICS.get(m).version for m in sorted(selected(suite.eval, corpus))}}

    def key_of(point: Point, older: dict | None = None) -> str:
        # the batch size orders the sampler's random draws, so it changes every sample after the first batch
        ident = {**eval_ident, "num_samples": point.eval_config.num_samples,
                 "batch_size": point.eval_config.batch_size}
        if point.sample_seed is not None:  # unset: the training seed, already in the model's identity
            ident.update(sample_seed=point.sample_seed, split=point.split)
        return config_hash(point.identity(ident, older=older))

    return key_of
