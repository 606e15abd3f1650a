"""MAUVE on harness features: high for held-out text, low for word-shuffled text (across the batch
and, with the default features, within each sequence), the same number mauve-text computes from
the same features, and an interval that holds the k-means seeds' spread."""
from types import SimpleNamespace

import mauve
import numpy as np
import pytest
import torch

from flowbench.data.language import HMMLanguage
from flowbench.metrics import MetricError, Samples
from flowbench.metrics import mauve_score
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
    minilm = {"features": "minilm"}
    same = metric.compute(Samples(tokens=true, nll=None, mask=None, corpus=language), minilm)
    salad = metric.compute(Samples(tokens=shuffled_across(true), nll=None, mask=None, corpus=language), minilm)
    assert same["mauve"] > 0.8 and salad["mauve"] < 0.3
    assert salad["mauve_hi"] < same["mauve_lo"]
    for row in (same, salad):
        assert row["mauve_lo"] <= row["mauve"] <= row["mauve_hi"]
    # the floor is held-out (test) data against the reference: exactly the first row
    assert same["mauve_floor"] == pytest.approx(same["mauve"])
    assert (same["mauve_features"], same["mauve_samples"], same["mauve_references"], same["mauve_buckets"]) == \
        ("minilm", N, N, 10)

    # the same features handed to mauve-text directly give the same number: the mean over k-means
    # seeds 25..29
    p = minilm_features([language.decode(r) for r in shuffled_across(true)])
    q = minilm_features([language.decode(r) for r in language.split("validation", N)])
    direct = [mauve.compute_mauve(p_features=p, q_features=q, seed=s, mauve_scaling_factor=5).mauve
              for s in range(25, 30)]
    assert np.mean(direct) == pytest.approx(salad["mauve"], rel=1e-9)


def word_order_probes(language, true: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """True sequences with their word order destroyed three ways (scripts/mauve_probes.py)."""
    g = torch.Generator().manual_seed(seed)
    n, length = true.shape
    unigram, _ = language.ngram_marginals()
    return {"shuffled within": torch.stack([row[torch.randperm(length, generator=g)] for row in true]),
            "resampled within": torch.gather(true, 1, torch.randint(0, length, (n, length), generator=g)),
            "unigram i.i.d.": torch.multinomial(unigram.float(), n * length, True, generator=g).view(n, length)}


def test_default_features_see_word_order_on_the_embedded_language(language):
    # mean-pooled MiniLM alone scores a within-sequence shuffle about 0.93 against true data's 0.97
    n = 128
    true = language.split("test", n)
    metric = METRICS.get("mauve")
    same = metric.compute(Samples(tokens=true, nll=None, mask=None, corpus=language))
    assert same["mauve"] >= 0.9
    for name, probe in word_order_probes(language, true).items():
        row = metric.compute(Samples(tokens=probe, nll=None, mask=None, corpus=language))
        assert row["mauve"] <= 0.5 * same["mauve"], (name, row["mauve"], same["mauve"])
        assert row["mauve_hi"] < same["mauve_lo"], name
    assert same["mauve_features"] == "minilm+surprisal"


def test_judge_surprisal_features_see_word_order_through_the_judge(language, tmp_path):
    # minilm+judge-surprisal reads only the judge's scores (here the exact one), as on real text
    from flowbench.judges import ExactJudge

    n = 128
    judge = ExactJudge(corpus=language, cache_dir=tmp_path, device=torch.device("cpu"))
    metric, params = METRICS.get("mauve"), {"features": "minilm+judge-surprisal"}

    def row(tokens):
        nll, mask = judge.score(tokens)
        return metric.compute(Samples(tokens=tokens, nll=nll, mask=mask, corpus=language, judge=judge), params)

    true = language.split("test", n)
    same = row(true)
    assert same["mauve"] >= 0.9 and same["mauve_features"] == "minilm+judge-surprisal"
    for name, probe in word_order_probes(language, true).items():
        probed = row(probe)
        assert probed["mauve"] <= 0.5 * same["mauve"], (name, probed["mauve"], same["mauve"])
    # the reference's own surprisal is the z-score's origin: the held-out reference has mean 0, sd 1
    q = mauve_score.held_out(language, "validation", n, "minilm+judge-surprisal", None, judge)
    assert q.shape == (n, 385)
    assert q[:, -1].mean() == pytest.approx(0, abs=1e-5) and q[:, -1].std() == pytest.approx(0.1, rel=1e-4)
    with pytest.raises(MetricError, match="judge"):
        metric.compute(Samples(tokens=true, nll=None, mask=None, corpus=language), params)


def test_interval_holds_the_spread_over_kmeans_seeds(language, monkeypatch):
    """Two quantizations that disagree (MAUVE 1 and about 0.3, as k-means seeds may on few points):
    the estimate is their mean over the seeds and the interval reaches both."""
    buckets = 10
    even = np.full(buckets, 1 / buckets)
    skewed = np.r_[np.full(5, 0.18), np.full(5, 0.02)]

    def quantize(p, q, *, scaling, buckets, seed):
        p_hist, q_hist = (even, even) if seed % 2 == 0 else (skewed, skewed[::-1])
        return SimpleNamespace(mauve=mauve_score.mauve_from_histograms(p_hist, q_hist, scaling=scaling),
                               p_hist=p_hist, q_hist=q_hist, num_buckets=len(p_hist))

    monkeypatch.setattr(mauve_score, "mauve_of", quantize)
    row = METRICS.get("mauve").compute(Samples(tokens=language.split("test", 200), nll=None, mask=None,
                                               corpus=language), {"features": "exact"})
    per_seed = [quantize(None, None, scaling=5.0, buckets=buckets, seed=s).mauve for s in range(25, 30)]
    assert min(per_seed) < 0.5 and max(per_seed) == pytest.approx(1.0)
    assert row["mauve"] == pytest.approx(np.mean(per_seed))
    assert row["mauve_lo"] < min(per_seed) + 0.05 and row["mauve_hi"] > max(per_seed) - 0.1


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
    assert metric.options({}, language)["features"] == "minilm+surprisal"

    class Text:
        name, exact = "text_files", False
    with pytest.raises(MetricError, match="'exact'.*'text_files'"):
        metric.check(Text(), {"features": "exact"})
    with pytest.raises(MetricError, match="'minilm\\+surprisal'.*'text_files'"):
        metric.check(Text(), {"features": "minilm+surprisal"})
    assert metric.options({}, Text())["features"] == "minilm"  # real text keeps MiniLM
    with pytest.raises(MetricError, match="kmeans_seeds"):
        metric.check(language, {"kmeans_seeds": 0})
    with pytest.raises(MetricError, match="unknown key 'bukets'"):
        metric.check(language, {"bukets": 5})


def test_clustering_runs_on_one_blas_thread_with_the_same_result(monkeypatch):
    """PCA and k-means on a few hundred points: more BLAS threads only spin on a busy CPU; the
    call is pinned to one thread whatever the caller's pool, and the number is what two give."""
    from threadpoolctl import threadpool_info, threadpool_limits

    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(128, 48)).astype(np.float32), rng.normal(size=(128, 48)).astype(np.float32)
    with threadpool_limits(limits=2, user_api="blas"):
        free = mauve.compute_mauve(p_features=p, q_features=q, num_buckets=12, seed=25, verbose=False).mauve
    seen = []
    real = mauve.compute_mauve

    def spy(**kw):
        seen.extend(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")
        return real(**kw)

    monkeypatch.setattr(mauve, "compute_mauve", spy)
    with threadpool_limits(limits=2, user_api="blas"):
        pinned = mauve_score.mauve_of(p, q, scaling=5.0, buckets=12, seed=25).mauve
    assert seen and set(seen) == {1}
    assert pinned == free


def test_the_english_word_probes_move_whole_words(tmp_path):
    """scripts/mauve_probes.py on a BPE corpus: `words shuffled` is each sequence's own words in
    another order (the same tokens, every word intact), `words resampled` draws only the sequence's
    own words, and every probe keeps the sequence length."""
    import importlib.util
    from pathlib import Path

    from flowbench.data.text import TextFiles

    spec = importlib.util.spec_from_file_location("mauve_probes", Path(__file__).parents[2] / "scripts" / "mauve_probes.py")
    probes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probes)
    words = "the cat sat on a mat while an old dog slept near the warm fire of the house".split()
    g = np.random.default_rng(0)
    (tmp_path / "t.txt").write_text("\n".join(" ".join(g.choice(words, 12)) for _ in range(400)))
    corpus = TextFiles(paths=[str(tmp_path / "t.txt")], seq_len=16, vocab_size=300, cache_dir=tmp_path / "c")
    true = corpus.split("test", 8)
    sets = probes.word_probes(corpus, true)
    starts, eos = probes.word_starts(corpus), corpus.eos_id
    assert all(v.shape == true.shape for v in sets.values())
    moved = 0
    for row, shuffled, resampled in zip(true, sets["words shuffled"], sets["words resampled"]):
        own, s = probes.words_of(row, starts, eos), shuffled.tolist()
        assert sorted(s) == sorted(row.tolist())  # the same tokens
        assert all(any(s[i:i + len(w)] == w for i in range(len(s))) for w in own)  # every word intact
        moved += not torch.equal(shuffled, row)
        assert set(resampled.tolist()) <= set(row.tolist())  # the sequence's own words only
    assert moved >= 6  # the order did change
