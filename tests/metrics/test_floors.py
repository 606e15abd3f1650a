"""True-data floors: a distribution over 100 draws at the row's N, cached on disk under a
stable key, and the N-dependence that makes a ranking across N wrong."""
import json

import pytest
import torch

from flowbench.data.language import HMMLanguage
from flowbench.judges import ExactJudge
from flowbench.metrics import Samples, floors
from flowbench.registry import METRICS


@pytest.fixture(scope="module")
def language():
    return HMMLanguage(seq_len=16, seed=0)


def floor_of(language, n, cache_dir, name="ngram_kl"):
    judge = ExactJudge(corpus=language, cache_dir=cache_dir, device=torch.device("cpu"))
    tokens = language.split("validation", n)
    nll, mask = judge.score(tokens)
    samples = Samples(tokens=tokens, nll=nll, mask=mask, corpus=language, judge=judge, cache_dir=cache_dir)
    return METRICS.get(name).compute(samples, {})


def test_floor_is_a_band_that_moves_with_n(language, tmp_path):
    small, large = floor_of(language, 128, tmp_path), floor_of(language, 1024, tmp_path)
    for row in (small, large):
        for col in ("unigram_kl", "bigram_kl"):
            assert row[f"{col}_floor_lo"] < row[f"{col}_floor"] < row[f"{col}_floor_hi"]
    assert large["bigram_kl_floor_hi"] < small["bigram_kl_floor_lo"]  # the plug-in KL shrinks with N
    ppl = floor_of(language, 128, tmp_path, "gen_ppl")
    assert ppl["gen_ppl_floor_lo"] < ppl["gen_ppl_floor"] < ppl["gen_ppl_floor_hi"]
    assert "ppl_floor" not in ppl


def test_floors_are_cached_under_a_stable_key(language, tmp_path, monkeypatch):
    first = floor_of(language, 128, tmp_path)
    files = list((tmp_path / "floors").glob("*.json"))
    assert len(files) == 1
    stored = json.loads(files[0].read_text())
    assert stored["identity"]["draws"] == floors.FLOOR_DRAWS >= 100 and stored["identity"]["n"] == 128
    floors._memo.clear()  # a new process: the file answers, nothing is recomputed
    monkeypatch.setattr(floors, "_compute", lambda *a, **k: pytest.fail("recomputed a cached floor"))
    again = floor_of(language, 128, tmp_path)
    assert {k: v for k, v in again.items() if "floor" in k} == {k: v for k, v in first.items() if "floor" in k}


def test_another_language_with_the_same_description_gets_its_own_floor(language, tmp_path):
    emit = language.emit ** 2
    other = HMMLanguage.from_tables(language.topic_prior, language.init, language.trans,
                                    emit / emit.sum(-1, keepdim=True), words=language.words, seq_len=16)
    a, b = HMMLanguage.from_tables(language.topic_prior, language.init, language.trans, language.emit,
                                   words=language.words, seq_len=16), other
    assert floor_of(a, 128, tmp_path)["bigram_kl_floor"] != floor_of(b, 128, tmp_path)["bigram_kl_floor"]
