import math

import pytest
import torch

from flowbench.families.flow_map import EulerSamplerParams, FlowMap, FlowMapParams, FlowMapSamplerParams, jump
from flowbench.families.ode import solve
from flowbench.worker import CallCounter


pytestmark = pytest.mark.usefixtures("one_thread")


def family(lang, **params):
    """distill_start 0 unless given: the loss is the distilled one from the first step."""
    params = {"distill_start": 0.0, **params}
    return FlowMap(params=FlowMapParams(**params), vocab_size=lang.vocab_size, seq_len=lang.seq_len)



def gaussian_state(lang, n, seed=0):
    return torch.randn(n, lang.seq_len, lang.vocab_size, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(seed))


def test_flow_map_boundaries_and_simplex(tiny_language, conditioned_network):
    """X_{s,s} = x, X_{s,1} = delta_{s,1}, and a simplex point is mapped into the simplex."""
    fam = family(tiny_language)
    model = conditioned_network(fam)
    x = gaussian_state(tiny_language, 4)
    s = torch.tensor([0.0, 0.3, 0.6, 0.9], dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(jump(x, delta=fam.delta(model, x, s=s, t=s), s=s, t=s), x)
        one = torch.ones_like(s)
        d = fam.delta(model, x, s=s, t=one)
        assert torch.allclose(jump(x, delta=d, s=s, t=one), d.double(), atol=1e-12)
        p = torch.distributions.Dirichlet(torch.ones(tiny_language.vocab_size)).sample((4, 6)).double()
        t = s + 0.5 * (1 - s)
        X = jump(p, delta=fam.delta(model, p, s=s, t=t), s=s, t=t)
        assert X.min() >= 0 and torch.allclose(X.sum(-1), torch.ones(4, 6, dtype=torch.float64))
        assert not torch.allclose(X, p)
    # the sampler's last jump lands on delta_{0,1}(x_0): one step decodes its argmax
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(4, 6, tiny_language.vocab_size, generator=torch.Generator().manual_seed(3))  # float32
    out = fam.sample(model, n=4, sampler="flow_map", params=FlowMapSamplerParams(nfe=1), generator=gen)
    with torch.no_grad():
        expected = model(x0, s=torch.zeros(4), t=torch.ones(4)).argmax(-1)
    assert torch.equal(out, expected)


def test_evidence_is_the_gaussian_likelihood(tiny_language):
    fam = family(tiny_language)
    V = tiny_language.vocab_size
    x = gaussian_state(tiny_language, 2)
    t = torch.tensor([0.3, 0.8], dtype=torch.float64)
    ev = fam.evidence(x, t)
    # log N(x; t e_v, (1 - t)^2 I) for every v, written out
    means = t[:, None, None, None] * torch.eye(V, dtype=torch.float64)            # (2, 1, V, V)
    sd = (1 - t)[:, None, None, None]
    ref = torch.distributions.Normal(means, sd).log_prob(x[:, :, None, :]).sum(-1)  # (2, 6, V)
    assert torch.allclose(ev - ev[..., :1], ref - ref[..., :1], atol=1e-8)
    assert torch.all(fam.evidence(x, torch.zeros(2)) == 0)                         # t = 0: pure noise


def test_interpolant_is_noise_to_data(tiny_language):
    fam = family(tiny_language)
    x1 = tiny_language.split("train", 200)
    one_hot = torch.nn.functional.one_hot(x1, tiny_language.vocab_size).float()
    for t in (0.0, 0.7, 1.0):
        I = fam.interpolate(x1, t=torch.full((200,), t), generator=torch.Generator().manual_seed(0))
        noise = I - t * one_hot
        assert noise.mean().abs() < 0.01 and noise.std().item() == pytest.approx(1 - t, abs=0.01)


def test_oracle_flow_map_integrates_the_diagonal_flow(tiny_language):
    """The oracle's X_{s,t} converges (second order) to a fine rk4 solve of
    dx/dt = (D_t(x) - x)/(1 - t), and its delta_{s,t} lies on the simplex."""
    fam = family(tiny_language)
    x = gaussian_state(tiny_language, 8)
    s, t = torch.full((8,), 0.1, dtype=torch.float64), torch.full((8,), 0.7, dtype=torch.float64)
    diagonal = fam.oracle_model(tiny_language.posterior)

    def velocity(r, y):
        rr = r.expand(8)
        return (diagonal(y, s=rr, t=rr).exp() - y) / (1 - r)

    ref = solve(velocity, x, torch.linspace(0.1, 0.7, 49, dtype=torch.float64), solver="rk4")
    errors = []
    for steps_per_unit in (32, 128):
        delta = fam.oracle_model(tiny_language.posterior, steps_per_unit=steps_per_unit)(x, s=s, t=t).exp()
        assert delta.min() >= 0 and torch.allclose(delta.sum(-1), torch.ones(8, 6, dtype=torch.float64))
        errors.append((jump(x, delta=delta, s=s, t=t) - ref).abs().max().item())
    assert errors[1] < 1e-3 and errors[1] < errors[0] / 8
    assert (ref - x).abs().max() > 0.1  # the flow really moved


def test_oracle_obeys_the_semigroup_target(tiny_language):
    """delta_{s,t} = gamma delta_{s,u} + (1 - gamma) delta_{u,t}(X_{s,u}) for the exact flow map
    (nested integration grids make the oracle's composition exact)."""
    fam = family(tiny_language)
    oracle = fam.oracle_model(tiny_language.posterior, steps_per_unit=16)
    x = gaussian_state(tiny_language, 8)
    for s, u, t in [(0.25, 0.5, 0.75), (0.0, 0.5, 0.875), (0.125, 0.25, 1.0)]:
        ss, uu, tt = (torch.full((8,), v, dtype=torch.float64) for v in (s, u, t))
        direct = oracle(x, s=ss, t=tt).exp()
        target = fam.psd_target(oracle, x, s=ss, u=uu, t=tt)
        assert torch.allclose(target, direct, atol=1e-9)
        # the same mixture with the naive weight (u - s)/(t - s) is off (unless t = 1: gamma = 0)
        if t < 1:
            naive = (u - s) / (t - s)
            d_su = oracle(x, s=ss, t=uu).exp()
            d_ut = oracle(jump(x, delta=d_su, s=ss, t=uu), s=uu, t=tt).exp()
            assert (naive * d_su + (1 - naive) * d_ut - direct).abs().max() > 1e-3


@pytest.mark.parametrize("distill, params", [("psd", {}), ("lsd", {}), ("lsd", {"lsd_weight": "velocity"})])
def test_distillation_vanishes_at_the_oracle_and_trains(tiny_language, distill, params, conditioned_network):
    fam = family(tiny_language, distill=distill, **params)
    x1 = tiny_language.split("validation", 24)
    loss = fam.psd_loss if distill == "psd" else fam.lsd_loss
    oracle = fam.oracle_model(tiny_language.posterior)

    def diagonal(x, t=None, s=None):  # delta_{s,t} := D_s: the one-step Euler map, not a flow map
        return oracle(x, s=s, t=s)

    exact = loss(oracle, x1, generator=torch.Generator().manual_seed(0)).item()
    wrong = loss(diagonal, x1, generator=torch.Generator().manual_seed(0)).item()
    assert 0 <= exact < 1e-3 * wrong
    model = conditioned_network(fam).train()
    value = fam.loss(model, x1, generator=torch.Generator().manual_seed(0))
    value.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert math.isfinite(value.item()) and all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    anchor_only = family(tiny_language, distill="none").loss(model, x1, generator=torch.Generator().manual_seed(0))
    assert value.item() > anchor_only.item()


def test_nfe_is_backbone_calls(tiny_language, conditioned_network):
    fam = family(tiny_language)
    model = conditioned_network(fam)
    cases = [("flow_map", FlowMapSamplerParams(nfe=3, decode="sample")),
             ("flow_map", FlowMapSamplerParams(nfe=5, grid_power=2.0)),
             ("euler", EulerSamplerParams(nfe=3)),
             ("euler", EulerSamplerParams(nfe=4, solver="midpoint")),
             ("euler", EulerSamplerParams(nfe=8, solver="rk4", t_end=0.99))]
    for sampler, params in cases:
        counter = CallCounter(model)
        x = fam.sample(counter, n=2, sampler=sampler, params=params, generator=torch.Generator().manual_seed(0))
        assert counter.calls == params.nfe and x.shape == (2, 6)
    with pytest.raises(ValueError, match="multiple of 4"):
        fam.check_sampler("euler", EulerSamplerParams(nfe=6, solver="rk4", t_end=0.9))
    with pytest.raises(ValueError, match="t_end"):
        fam.check_sampler("euler", EulerSamplerParams(nfe=4, solver="rk4"))
    assert torch.allclose(fam.grid(4, power=2.0),
                          torch.tensor([0, 0.4375, 0.75, 0.9375, 1], dtype=torch.float64))


def sample_nll(lang, fam, sampler, params, n, **oracle_kw):
    model = CallCounter(fam.oracle_model(lang.posterior, **oracle_kw))
    x = fam.sample(model, n=n, sampler=sampler, params=params, generator=torch.Generator().manual_seed(0))
    assert model.calls == params.nfe
    return x, (-lang.log_prob(x) / lang.seq_len).mean().item()


def test_oracle_samplers_reproduce_the_language(tiny_language):
    fam = family(tiny_language)
    h, _ = tiny_language.entropy_rate()
    # the exact flow map needs no fine grid: two jumps already give the language
    x, nll = sample_nll(tiny_language, fam, "flow_map", FlowMapSamplerParams(nfe=2), n=1000)
    assert nll == pytest.approx(h, abs=0.06)
    uni, _ = tiny_language.ngram_marginals()
    emp = torch.bincount(x.flatten(), minlength=tiny_language.vocab_size).double() / x.numel()
    assert 0.5 * (emp - uni).abs().sum() < 0.2
    # the diagonal flow needs many steps; with one Euler step every sample is the same sequence
    _, nll_ode = sample_nll(tiny_language, fam, "euler", EulerSamplerParams(nfe=32, solver="midpoint"), n=500)
    assert nll_ode == pytest.approx(h, abs=0.1)
    x1, _ = sample_nll(tiny_language, fam, "euler", EulerSamplerParams(nfe=1), n=50)
    assert len(torch.unique(x1, dim=0)) == 1


def test_softmax_input_loses_nothing_the_flow_map_needs(tiny_language, conditioned_network):
    """The exact delta_{s,t} ignores per-position shifts of x, and so does the preconditioned
    network; without preconditioning the network sees them."""
    fam = family(tiny_language)
    x = gaussian_state(tiny_language, 4)
    shift = 3 * torch.randn(4, 6, 1, dtype=torch.float64)
    s, t = torch.full((4,), 0.2, dtype=torch.float64), torch.full((4,), 0.6, dtype=torch.float64)
    oracle = fam.oracle_model(tiny_language.posterior, steps_per_unit=16)
    assert torch.allclose(oracle(x + shift, s=s, t=t).exp(), oracle(x, s=s, t=t).exp(), atol=1e-9)
    for precondition, invariant in (("softmax", True), ("none", False)):
        model = conditioned_network(family(tiny_language, precondition=precondition))
        with torch.no_grad():
            same = torch.allclose(model(x + shift, s=s, t=t), model(x, s=s, t=t), atol=1e-4)
        assert same == invariant


def test_float32_input_maps_by_default_float64_the_sampler_s_choice(tiny_language, conditioned_network):
    """The softmax input and the evidence head run in float32 in training and, by default, for
    the sampler's calls; input_precision float64 runs them in float64 for the sampler's own calls
    only: the same network within rounding (not bit for bit), the same samples here; only the
    non-default choice enters a row's sampler parameters."""
    from flowbench.families import flow_map

    fam = family(tiny_language)
    model = conditioned_network(fam)
    x = gaussian_state(tiny_language, 8).float()
    s, t = torch.full((8,), 0.3, dtype=torch.float64), torch.full((8,), 0.8, dtype=torch.float64)
    seen = []

    def recording(*args, **kw):
        seen.append(flow_map._INPUT_DTYPE.get())
        return model(*args, **kw)

    with torch.no_grad():
        out32 = model(x, s=s, t=t)
        token = flow_map._INPUT_DTYPE.set(torch.float64)
        out64 = model(x, s=s, t=t)
        flow_map._INPUT_DTYPE.reset(token)
    assert not torch.equal(out32, out64) and torch.allclose(out32, out64, atol=1e-4)
    draws = {}
    for precision in ("float64", "float32"):
        params = FlowMapSamplerParams(nfe=2, input_precision=precision)
        seen.clear()
        draws[precision] = fam.sample(recording, n=8, sampler="flow_map", params=params,
                                      generator=torch.Generator().manual_seed(0))
        assert seen == [getattr(torch, precision)] * 2
    assert torch.equal(draws["float32"], draws["float64"])
    assert flow_map._INPUT_DTYPE.get() == torch.float32  # reset after sampling: training reads float32
    with torch.no_grad():
        assert torch.equal(model(x, s=s, t=t), out32)
    assert "input_precision" not in FlowMapSamplerParams(nfe=2).key_dump()
    assert FlowMapSamplerParams(nfe=2).input_precision == "float32"
    assert FlowMapSamplerParams(nfe=2, input_precision="float64").key_dump()["input_precision"] == "float64"
