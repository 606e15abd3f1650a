"""The n-gram KL: true samples sit at the floor; repetitive and low-temperature generators,
whose gen PPL can beat true data, cannot."""
import pytest
import torch

from flowbench.data.language import HMMLanguage
from flowbench.judges import ExactJudge
from flowbench.metrics import MetricError, Samples
from flowbench.registry import METRICS

N = 256


@pytest.fixture(scope="module")
def language():
    return HMMLanguage(seq_len=32, seed=0)


def cooled(language: HMMLanguage, temperature: float) -> HMMLanguage:
    """The language with every emission distribution at a temperature: p^(1/T), renormalised."""
    emit = language.emit ** (1 / temperature)
    return HMMLanguage.from_tables(language.topic_prior, language.init, language.trans,
                                   emit / emit.sum(-1, keepdim=True), words=language.words, seq_len=language.seq_len)


def scores(language, tokens, *names):
    judge = ExactJudge(corpus=language, cache_dir=".", device=torch.device("cpu"))
    nll, mask = judge.score(tokens)
    samples = Samples(tokens=tokens, nll=nll, mask=mask, corpus=language, judge=judge)
    row = {}
    for name in names:
        row.update(METRICS.get(name).compute(samples, {}))
    return row


def test_true_samples_score_at_the_floor(language):
    row = scores(language, language.split("train", N), "ngram_kl")
    for col in ("unigram_kl", "bigram_kl"):
        assert row[f"{col}_lo"] <= row[f"{col}_floor"] <= row[f"{col}_hi"]
        assert row[col] < 1.5 * row[f"{col}_floor"]


def test_a_repetitive_generator_is_far_above_the_floor(language):
    repeat = language.split("train", N)[:, :1].repeat(1, language.seq_len)
    row = scores(language, repeat, "ngram_kl")
    assert row["bigram_kl"] > 10 * row["bigram_kl_floor"]
    assert row["unigram_kl"] > 10 * row["unigram_kl_floor"]


def test_low_temperature_beats_true_data_on_gen_ppl_but_not_on_kl(language):
    cold = cooled(language, 0.3).sample(N, generator=torch.Generator().manual_seed(0))
    row = scores(language, cold, "ngram_kl", "gen_ppl", "entropy")
    true_ppl = scores(language, language.split("test", N), "gen_ppl")["gen_ppl"]
    assert row["gen_ppl"] < true_ppl                      # gen PPL is fooled ...
    assert row["entropy"] < row["entropy_floor"]           # ... by a collapse in diversity ...
    assert row["bigram_kl_lo"] > 2 * row["bigram_kl_floor"]  # ... which the KL sees


def test_the_kl_on_real_text_fails_naming_metric_and_corpus():
    class Text:
        name, exact = "text_files", False
    with pytest.raises(MetricError, match="'ngram_kl'.*'text_files'"):
        METRICS.get("ngram_kl").check(Text(), {})
