"""MAUVE on harness features: high for held-out text, low for word-shuffled text, and the same
number mauve-text computes from the same features."""
import mauve
import numpy as np
import pytest
import torch

from flowbench.data.language import HMMLanguage
from flowbench.metrics import MetricError, Samples
from flowbench.metrics.features import minilm_features
from flowbench.registry import METRICS

N = 100


@pytest.fixture(scope="module")
def language():
    return HMMLanguage(seq_len=32, seed=0)


def shuffled_across(tokens: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Every word of the batch in a random place: the words keep their frequencies, the
    sequences lose their topic and syntax."""
    flat = tokens.reshape(-1)
    return flat[torch.randperm(len(flat), generator=torch.Generator().manual_seed(seed))].view_as(tokens)


def test_minilm_mauve_separates_held_out_text_from_shuffled_text(language):
    true = language.split("test", N)
    metric = METRICS.get("mauve")
    same = metric.compute(Samples(tokens=true, nll=None, mask=None, corpus=language), {})
    salad = metric.compute(Samples(tokens=shuffled_across(true), nll=None, mask=None, corpus=language), {})
    assert same["mauve"] > 0.8 and salad["mauve"] < 0.3
    assert salad["mauve_hi"] < same["mauve_lo"]
    for row in (same, salad):
        assert row["mauve_lo"] <= row["mauve"] <= row["mauve_hi"]
    # the floor is held-out (test) data against the reference: exactly the first row
    assert same["mauve_floor"] == pytest.approx(same["mauve"])
    assert (same["mauve_features"], same["mauve_samples"], same["mauve_references"], same["mauve_buckets"]) == \
        ("minilm", N, N, 10)

    # the same features handed to mauve-text directly give the same number
    p = minilm_features([language.decode(r) for r in shuffled_across(true)])
    q = minilm_features([language.decode(r) for r in language.split("validation", N)])
    direct = mauve.compute_mauve(p_features=p, q_features=q, seed=25, mauve_scaling_factor=5)
    assert direct.mauve == pytest.approx(salad["mauve"], rel=1e-9)


def test_minilm_features_are_mean_pooled_over_the_attention_mask():
    short, padded = minilm_features(["a cat"]), minilm_features(["a cat", "a much longer sentence about cats and dogs"])
    assert short.shape == (1, 384)
    np.testing.assert_allclose(short[0], padded[0], atol=1e-5)  # padding never enters the mean


def test_exact_features_need_the_embedded_language(language):
    true = language.split("test", N)
    metric = METRICS.get("mauve")
    exact = metric.compute(Samples(tokens=true, nll=None, mask=None, corpus=language), {"features": "exact"})
    salad = metric.compute(Samples(tokens=shuffled_across(true), nll=None, mask=None, corpus=language),
                           {"features": "exact"})
    assert exact["mauve"] > 0.8 and salad["mauve"] < exact["mauve"] - 0.2

    class Text:
        name, exact = "text_files", False
    with pytest.raises(MetricError, match="'exact'.*'text_files'"):
        metric.check(Text(), {"features": "exact"})
    with pytest.raises(MetricError, match="unknown key 'bukets'"):
        metric.check(language, {"bukets": 5})
