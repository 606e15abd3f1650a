"""The true-data gen PPL floor is cached by what the judge and corpus are (as they describe
themselves), never by id(): a new object that reuses a freed object's id gets its own floor."""
import torch

from flowbench.data.language import HMMLanguage
from flowbench.judges import ExactJudge, Judge
from flowbench.metrics import Samples, floors
from flowbench.registry import METRICS


class ScaledJudge(Judge):
    """The language's own NLL times `scale`: judges that differ only in a parameter."""

    name = "scaled"

    def __init__(self, *, corpus, cache_dir, device, scale: float = 1.0):
        super().__init__(corpus=corpus, cache_dir=cache_dir, device=device)
        self.scale, self.calls = scale, 0

    def score(self, tokens):
        self.calls += 1
        nll = self.corpus.token_nll(tokens) * self.scale
        return nll, torch.ones_like(nll, dtype=torch.bool)


def samples_of(judge, corpus, n):
    return Samples(tokens=torch.zeros(n, corpus.seq_len, dtype=torch.long), nll=None, mask=None,
                   corpus=corpus, judge=judge)


def floor_of(corpus, judge, n=16) -> float:
    """The floor computed directly, bypassing any cache."""
    return floors._compute(METRICS.get("gen_ppl"), samples_of(judge, corpus, n), {}, n=n,
                           draws=floors.FLOOR_DRAWS)["gen_ppl_floor"]


def true_gen_ppl(judge, corpus, n) -> float:
    """The floor as a row gets it (through the cache)."""
    return floors.floor_columns(METRICS.get("gen_ppl"), samples_of(judge, corpus, n), {})["gen_ppl_floor"]


def judge_of(cls, corpus, **params):
    return cls(corpus=corpus, cache_dir=".", device=torch.device("cpu"), **params)


def test_objects_that_reuse_an_id_get_their_own_floor(monkeypatch):
    monkeypatch.setattr(floors, "_memo", {})
    monkeypatch.setattr(floors, "id", lambda obj: 1, raising=False)  # every object the same id
    seed0, seed1 = HMMLanguage(seq_len=6, seed=0), HMMLanguage(seq_len=6, seed=1)
    first = true_gen_ppl(judge_of(ExactJudge, seed0), seed0, 16)
    assert first == floor_of(seed0, judge_of(ExactJudge, seed0))
    other_corpus = true_gen_ppl(judge_of(ExactJudge, seed1), seed1, 16)
    assert other_corpus == floor_of(seed1, judge_of(ExactJudge, seed1)) != first
    other_judge = true_gen_ppl(judge_of(ScaledJudge, seed0, scale=2.0), seed0, 16)
    assert other_judge == floor_of(seed0, judge_of(ScaledJudge, seed0, scale=2.0)) != first


def test_a_judge_and_corpus_that_describe_alike_share_one_floor(monkeypatch):
    monkeypatch.setattr(floors, "_memo", {})
    language = HMMLanguage(seq_len=6, seed=0)
    judge = judge_of(ScaledJudge, language, scale=2.0)
    value = true_gen_ppl(judge, language, 16)
    again = judge_of(ScaledJudge, HMMLanguage(seq_len=6, seed=0), scale=2.0)  # new objects, same identity
    assert true_gen_ppl(again, HMMLanguage(seq_len=6, seed=0), 16) == value and again.calls == 0
    assert true_gen_ppl(judge, language, 32) != value  # another n, another floor
