import math

import pytest
import torch

from flowbench.metrics import entropy, gen_ppl
from flowbench.registry import METRICS


def test_gen_ppl_both_conventions_by_hand():
    nll = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.5, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    out = gen_ppl(tokens=None, nll=nll, mask=mask)
    assert out["gen_ppl"] == pytest.approx(math.exp((1 + 2 + 3 + 0.5 + 0.5) / 5))
    assert out["gen_ppl_mean"] == pytest.approx((math.exp(6 / 3) + math.exp(1 / 2)) / 2)
    assert out["nll_median"] == pytest.approx(1.0)
    # the two conventions differ whenever samples differ in quality
    assert out["gen_ppl"] != pytest.approx(out["gen_ppl_mean"])


def test_entropy_is_per_sample_unigram_in_nats():
    tokens = torch.tensor([[0, 0, 0, 0], [0, 1, 2, 3], [5, 5, 7, 7]])
    expected = (0.0 + math.log(4) + math.log(2)) / 3
    assert entropy(tokens=tokens)["entropy"] == pytest.approx(expected)


def test_metrics_registered_with_direction():
    assert METRICS.get("gen_ppl").higher_is_better is False
    assert METRICS.get("entropy").higher_is_better is True


def test_score_columns_are_the_built_in_metrics_interval_columns():
    """One list of the columns that score a row: a built-in metric that gains or loses an interval
    column changes it here, and the training-noise scales compare reads cover exactly it."""
    from flowbench.metrics import BUILTIN_METRICS, METRIC_COLUMNS, SCORE_COLUMNS
    from flowbench.training_noise import SCALES

    assert sorted(SCORE_COLUMNS) == sorted(c for cls in BUILTIN_METRICS for c in cls.interval)
    assert set(SCORE_COLUMNS) <= set(METRIC_COLUMNS) and set(SCALES) == set(SCORE_COLUMNS)
