"""Bootstrap intervals contain their estimate, shrink with more samples, and repeat exactly."""
import pytest
import torch

from flowbench.data.language import HMMLanguage
from flowbench.judges import ExactJudge
from flowbench.metrics import Samples
from flowbench.metrics.bootstrap import seed_interval
from flowbench.registry import METRICS

COLUMNS = {"gen_ppl": ("gen_ppl",), "entropy": ("entropy",), "ngram_kl": ("unigram_kl", "bigram_kl")}


def rows(n: int, seed: int = 0) -> dict:
    language = HMMLanguage(seq_len=16, seed=0)
    tokens = language.split("train", n)
    judge = ExactJudge(corpus=language, cache_dir=".", device=torch.device("cpu"))
    nll, mask = judge.score(tokens)
    samples = Samples(tokens=tokens, nll=nll, mask=mask, corpus=language, seed=seed)
    out = {}
    for name in COLUMNS:
        out.update(METRICS.get(name).compute(samples, {}))
    return out


def test_intervals_contain_the_estimate_and_shrink_with_more_samples():
    small, large = rows(64), rows(1024)
    for cols in COLUMNS.values():
        for c in cols:
            for row in (small, large):
                assert row[f"{c}_lo"] < row[c] < row[f"{c}_hi"], c
            assert large[f"{c}_hi"] - large[f"{c}_lo"] < 0.5 * (small[f"{c}_hi"] - small[f"{c}_lo"]), c


def test_intervals_repeat_with_the_seed_and_move_without_it():
    assert rows(64) == rows(64)
    assert rows(64, seed=1)["gen_ppl_lo"] != rows(64)["gen_ppl_lo"]


def test_seed_interval_brackets_the_mean_over_seeds():
    mean, lo, hi = seed_interval([1.0, 2.0, 3.0, 4.0])
    assert mean == pytest.approx(2.5) and 1.0 <= lo < mean < hi <= 4.0
