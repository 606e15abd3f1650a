import pytest
import torch

from flowbench.families.flow_map import EulerSamplerParams, FlowMap, FlowMapParams, FlowMapSamplerParams
from flowbench.steering.guidance import _reward_gradient, best_of_n, guided_sample, passes
from flowbench.steering.rewards import TopicReward
from flowbench.steering.target import TiltedTarget
from flowbench.worker import CallCounter


pytestmark = pytest.mark.usefixtures("one_thread")


def family(lang):
    return FlowMap(params=FlowMapParams(), vocab_size=lang.vocab_size, seq_len=lang.seq_len)



def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_eta_zero_reproduces_the_unsteered_samplers(tiny_language, conditioned_network):
    fam, net = family(tiny_language), conditioned_network(family(tiny_language))
    reward = TopicReward(corpus=tiny_language, topic=0)
    for nfe in (1, 3):
        base = fam.sample(net, n=8, sampler="flow_map", params=FlowMapSamplerParams(nfe=nfe), generator=gen())
        for horizon in (1.0, 0.5):
            steered = guided_sample(fam, net, n=8, nfe=nfe, eta=0.0, reward=reward, horizon=horizon,
                                    generator=gen())
            assert torch.equal(steered, base)
        euler = fam.sample(net, n=8, sampler="euler", params=EulerSamplerParams(nfe=nfe), generator=gen())
        tangent = guided_sample(fam, net, n=8, nfe=nfe, eta=0.0, reward=reward, method="tangent", generator=gen())
        assert torch.equal(tangent, euler)
    # a non-zero eta moves the samples: the guidance is wired in
    steered = guided_sample(fam, net, n=8, nfe=3, eta=50.0, reward=reward, generator=gen())
    assert not torch.equal(steered, base)


def test_calls_match_the_stated_cost(tiny_language, conditioned_network):
    fam = family(tiny_language)
    net = CallCounter(conditioned_network(fam))
    reward = TopicReward(corpus=tiny_language, topic=0)
    guided_sample(fam, net, n=2, nfe=3, eta=1.0, reward=reward, generator=gen())
    assert net.calls == 3 + 2                       # 3 look-aheads (with backward), 2 more jumps
    assert passes("lookahead", nfe=3) == 3 * 3 + 2  # a backward is two passes
    net.calls = 0
    guided_sample(fam, net, n=2, nfe=3, eta=1.0, reward=reward, method="tangent", generator=gen())
    assert net.calls == 3 and passes("tangent", nfe=3) == 9
    net.calls = 0
    best_of_n(fam, net, n=2, n_best=4, nfe=3, reward=reward, generator=gen())
    assert net.calls == 3 and passes("best_of_n", nfe=3, n_best=4) == 12   # one batch of 8 draws


def test_best_of_n_keeps_the_highest_reward(tiny_language, conditioned_network):
    fam, net = family(tiny_language), conditioned_network(family(tiny_language))
    reward = TopicReward(corpus=tiny_language, topic=0)
    kept = best_of_n(fam, net, n=4, n_best=3, nfe=2, reward=reward, generator=gen())
    draws = fam.sample(net, n=12, sampler="flow_map", params=FlowMapSamplerParams(nfe=2), generator=gen())
    best = reward.of_ids(draws).view(4, 3).max(-1).values
    assert torch.allclose(reward.of_ids(kept), best)


def test_exact_lookahead_gradient_vanishes_and_a_shorter_horizon_sees(micro_language):
    """The exact X_{t,1} ends on a vertex: its reward is flat in x_t; delta_{t,tau}, tau < 1, is not."""
    fam = family(micro_language)
    oracle = fam.oracle_model(micro_language.posterior, steps_per_unit=8)
    reward = TopicReward(corpus=micro_language, topic=0)
    x = torch.randn(4, micro_language.seq_len, micro_language.vocab_size, generator=gen(), dtype=torch.float64)
    t = torch.full((4,), 0.25, dtype=torch.float64)
    full, _ = _reward_gradient(oracle, reward, x, t=t, end=torch.ones_like(t), lam=1.0)
    half, _ = _reward_gradient(oracle, reward, x, t=t, end=t + 0.5 * (1 - t), lam=1.0)
    assert full.abs().max() < 1e-6 < 1e-2 < half.abs().max()


def test_lookahead_steering_raises_the_topic_share(tiny_language):
    """Oracle flow map, K = 8 topics (base rate 1/8): a modest eta puts most samples in the topic;
    the guidance's sign or a detached look-ahead would leave the share near 1/8."""
    fam = family(tiny_language)
    oracle = fam.oracle_model(tiny_language.posterior, steps_per_unit=4)
    reward = TopicReward(corpus=tiny_language, topic=5)
    target = TiltedTarget(tiny_language, topic=5, lam=1.0, n_reference=128)
    base = guided_sample(fam, oracle, n=24, nfe=3, eta=0.0, reward=reward, horizon=0.5, generator=gen())
    steered = guided_sample(fam, oracle, n=24, nfe=3, eta=5.0, reward=reward, horizon=0.5, generator=gen())
    assert target.score(base)["topic_share"] < 0.35
    assert target.score(steered)["topic_share"] > 0.75
