import pytest
import torch
import torch.nn.functional as F

from flowbench.data.language import HMMLanguage
from flowbench.steering.rewards import REWARDS, TopicReward, topic_log_posterior
from flowbench.steering.target import TiltedTarget


def restricted(lang, k):
    """The language with its topic fixed to k: log_prob is log p(x | k) by the corpus's own forward."""
    prior = torch.zeros(lang.n_topics, dtype=torch.float64)
    prior[k] = 1.0
    return HMMLanguage.from_tables(prior, lang.init, lang.trans, lang.emit, seq_len=lang.seq_len)


def test_topic_reward_is_the_exact_posterior_on_one_hots(tiny_language):
    lang = tiny_language
    ids = lang.sample(16, generator=torch.Generator().manual_seed(0))
    joint = torch.stack([lang.topic_prior[k].log() + restricted(lang, k).log_prob(ids)
                         for k in range(lang.n_topics)], -1)                       # (16, K)
    exact = joint - lang.log_prob(ids)[:, None]                                    # log p(k | x)
    assert torch.allclose(exact.logsumexp(-1), torch.zeros(16, dtype=torch.float64), atol=1e-9)
    got = topic_log_posterior(lang, F.one_hot(ids, lang.vocab_size).double())
    assert torch.allclose(got, exact, atol=1e-9)
    reward = REWARDS.get("topic")(corpus=lang, topic=3)
    assert torch.allclose(reward.of_ids(ids), exact[:, 3], atol=1e-9)


def test_topic_reward_gradient_matches_finite_differences(tiny_language):
    reward = TopicReward(corpus=tiny_language, topic=1)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, tiny_language.seq_len, tiny_language.vocab_size, generator=g,
                    dtype=torch.float64).mul(3).softmax(-1)                        # interior points
    xg = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(reward(xg).sum(), xg)
    for seed in range(3):
        d = torch.randn(x.shape, generator=torch.Generator().manual_seed(10 + seed), dtype=torch.float64)
        h = 1e-6
        fd = (reward(x + h * d) - reward(x - h * d)).sum() / (2 * h)
        assert float(fd) == pytest.approx(float((grad * d).sum()), rel=1e-5, abs=1e-9)
    assert grad.abs().max() > 1e-3  # the check is not vacuous


def test_topic_reward_rejects_a_missing_topic(tiny_language):
    with pytest.raises(ValueError, match="topic must lie in 0..7"):
        TopicReward(corpus=tiny_language, topic=8)


def test_tilted_target_is_normalised_by_enumeration():
    lang = HMMLanguage(seq_len=2, seed=0, n_topics=2)                                # V = 100
    V = lang.vocab_size
    ids = torch.cartesian_prod(torch.arange(V), torch.arange(V))                    # every sequence
    exact = TiltedTarget(lang, topic=1, lam=1.0, n_reference=64)
    assert float(exact.log_prob(ids).logsumexp(0)) == pytest.approx(0.0, abs=1e-9)
    assert torch.allclose(exact.log_prob(ids), restricted(lang, 1).log_prob(ids), atol=1e-9)
    # lambda != 1: Z from weighted exact samples, close to the enumerated normaliser
    mc = TiltedTarget(lang, topic=1, lam=2.0, n_reference=4096)
    assert float(mc.log_prob(ids).logsumexp(0)) == pytest.approx(0.0, abs=0.05)


def test_scores_see_topic_share_and_collapse(tiny_language):
    lang = tiny_language
    target = TiltedTarget(lang, topic=2, lam=1.0, n_reference=256)
    on_topic = restricted(lang, 2).sample(64, generator=torch.Generator().manual_seed(3))
    base = lang.sample(64, generator=torch.Generator().manual_seed(3))
    good, plain = target.score(on_topic), target.score(base)
    assert good["topic_share"] > 0.9 > 0.5 > plain["topic_share"]
    assert good["topic_kl"] < 0.1 < plain["topic_kl"]
    assert good["tilted_nll"] < plain["tilted_nll"]
    assert good["tilted_nll"] == pytest.approx(target.nll_floor, abs=0.3)
