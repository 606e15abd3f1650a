import math

import pytest
import torch

from flowbench.config import BackboneConfig
from flowbench.families.kl_flow import HybridParams, KLFlow, KLFlowParams, ODEParams, RandomizedParams
from flowbench.worker import CallCounter


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one thread is faster than several, and leaves the other core alone."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def family(V, L, **params):
    """The plain path on t in [0, 1] (the sampler and path math below); the recipe's defaults,
    an evidence head and training on [0, 0.4], are tested in test_recipe.py."""
    params = {"evidence_head": False, "time": {"high": 1.0}, **params}
    return KLFlow(params=KLFlowParams(**params), vocab_size=V, seq_len=L)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def independent_posterior(log_prior):
    """Exact posterior of a language of i.i.d. tokens with prior exp(log_prior) (V,)."""
    return lambda ev: (ev + log_prior).log_softmax(-1)


@pytest.mark.parametrize("beta", [0.01, 0.3])
def test_path_endpoints(beta):
    fam = family(7, 5, beta=beta, noise_scale=2.0)
    x1 = torch.randint(7, (4000, 5), generator=gen(1))
    # t = 0: centered N(0, sigma^2) logits, blind to the data
    l0 = fam.interpolate(x1, torch.zeros(len(x1)), generator=gen(2))
    assert l0.sum(-1).abs().max() < 1e-9
    assert l0.var().item() == pytest.approx(4.0 * (1 - 1 / 7), rel=0.03)
    at_data = l0.gather(-1, x1[..., None])
    assert at_data.mean().abs().item() < 0.05
    # t = 1: softmax gives the beta-smoothed one-hot exactly
    x_1 = fam.interpolate(x1, torch.ones(len(x1)), generator=gen(2)).softmax(-1)
    smoothed = (1 - beta) * torch.nn.functional.one_hot(x1, 7).double() + beta / 7
    assert torch.allclose(x_1, smoothed, atol=1e-12)


def test_interpolant_is_softmax_of_the_linear_logit_interpolation():
    V, beta, sigma = 6, 0.05, 1.5
    fam = family(V, 3, beta=beta, noise_scale=sigma)
    x1 = torch.randint(V, (5, 3), generator=gen(1))
    t = torch.tensor([0.0, 0.1, 0.5, 0.8, 0.97], dtype=torch.float64)
    l_t = fam.interpolate(x1, t, generator=gen(7))
    l0 = sigma * torch.randn((5, 3, V), generator=gen(7), dtype=torch.float64)  # the same draw, uncentered
    l1 = torch.log((1 - beta) * torch.nn.functional.one_hot(x1, V).double() + beta / V)
    tt = t[:, None, None]
    assert torch.allclose(l_t.softmax(-1), ((1 - tt) * l0 + tt * l1).softmax(-1), atol=1e-12)
    # the KL geodesic: log x_t is the same mix of log x_0 and log x_1, up to normalisation
    mix = (1 - tt) * l0.log_softmax(-1) + tt * l1
    assert torch.allclose(l_t.log_softmax(-1), mix.log_softmax(-1), atol=1e-12)


@pytest.mark.parametrize("input", ["probs", "logits"])
@pytest.mark.parametrize("t", [0.0, 0.3, 0.9])
def test_evidence_is_the_gaussian_density_of_the_centered_logits(t, input):
    """Compared with the log-density of coordinates 1..V-1 of the centered state (the last one is
    their negative sum), a non-degenerate Gaussian with mean t Delta P e_v; the evidence reads the
    network's input (x_t or the logits, which may carry any per-position offset)."""
    V, sigma = 5, 0.7
    fam = family(V, 2, beta=0.1, noise_scale=sigma, input=input)
    l_t = fam.interpolate(torch.tensor([[1, 4]]), torch.tensor([t]), generator=gen(3))  # (1, 2, V)
    x_t = fam.model_input(l_t + torch.tensor([3.0, -1.0]).view(1, 2, 1))
    if input == "probs":
        assert torch.allclose(x_t, l_t.softmax(-1), atol=1e-12)
    ev = fam.evidence(x_t, torch.tensor([t]))[0]  # (2, V)
    P = torch.eye(V, dtype=torch.float64) - 1.0 / V
    cov = (sigma * (1 - t)) ** 2 * P[:-1, :-1]
    y = (l_t[0] @ P)[:, :-1]  # (2, V-1)
    ref = torch.stack([torch.distributions.MultivariateNormal(t * fam.delta * P[v, :-1], cov).log_prob(y)
                       for v in range(V)], -1)  # (2, V)
    assert torch.allclose(ev - ev[:, :1], ref - ref[:, :1], atol=1e-8)


def test_one_token_oracle_drives_the_ode_to_the_token():
    """A language that is always token 3: the posterior never moves, the exact flow is the straight
    line l_t = (1 - t) l_0 + t l_1(3) and every solver follows it."""
    V, L, n = 8, 4, 16
    fam = family(V, L)
    posterior = lambda ev: torch.full_like(ev, -math.inf).index_fill_(-1, torch.tensor(3), 0.0)
    target = fam.target_logits(torch.full((n, L), 3))
    for solver, t_end, nfe in (("euler", 1.0, 5), ("midpoint", 1.0, 6), ("heun", 0.99, 6), ("rk4", 0.99, 8)):
        params = ODEParams(nfe=nfe, solver=solver, t_end=t_end, state_precision="float64")  # exact to 1e-9
        final, logp = fam.trajectory(fam.oracle_model(posterior), n=n, sampler="ode", params=params,
                                     generator=gen(5))
        l0 = fam.noise((n, L), generator=gen(5))
        assert torch.allclose(final, (1 - t_end) * l0 + t_end * target, atol=1e-9), solver
        assert final.argmax(-1).eq(3).all()
        x = fam.sample(fam.oracle_model(posterior), n=n, sampler="ode", params=params, generator=gen(5))
        assert x.eq(3).all()


def test_exact_ode_samples_an_independent_token_language():
    """With the exact posterior the flow carries the noise to the data marginals; a flow that
    stalls, reverses or overshoots ends on the noise's argmax (uniform) or on the mode."""
    V, L, n = 6, 4, 1000
    prior = torch.tensor([0.45, 0.25, 0.15, 0.08, 0.05, 0.02], dtype=torch.float64)
    fam = family(V, L)
    oracle = fam.oracle_model(independent_posterior(prior.log()))
    params = ODEParams(nfe=32)
    x = fam.sample(oracle, n=n, sampler="ode", params=params, generator=gen(1))
    final, _ = fam.trajectory(oracle, n=n, sampler="ode", params=params, generator=gen(1))
    for ids in (x, final.argmax(-1)):  # decode='sample', and the final state's own argmax
        freq = torch.bincount(ids.flatten(), minlength=V).double() / ids.numel()
        assert 0.5 * (freq - prior).abs().sum().item() < 0.03
    assert (final.argmax(-1) == x).double().mean().item() > 0.97
    # one call at t = 0 sees only the prior: 'sample' draws it, 'argmax' repeats its mode
    one = fam.sample(oracle, n=n, sampler="ode", params=ODEParams(nfe=1), generator=gen(2))
    assert (one == 0).double().mean().item() == pytest.approx(0.45, abs=0.03)
    assert fam.sample(oracle, n=n, sampler="ode", params=ODEParams(nfe=1, decode="argmax"),
                      generator=gen(2)).eq(0).all()


@pytest.fixture(scope="module")
def net():
    """An untrained backbone: a fixed, input- and time-dependent stand-in for the denoiser."""
    torch.manual_seed(0)
    fam = family(11, 5)
    model = fam.build_model(BackboneConfig(d_model=32, n_layers=1, n_heads=2)).eval()
    with torch.no_grad():
        model.head.weight.mul_(20.0)  # sharp outputs, so that samples depend on the path taken
    return fam, model


@pytest.mark.parametrize("decode", ["sample", "argmax"])
def test_hybrid_endpoints_are_ode_and_randomized(net, decode):
    fam, model = net
    run = lambda sampler, p: fam.sample(model, n=64, sampler=sampler, params=p, generator=gen(9))
    ode, rand = run("ode", ODEParams(nfe=6, decode=decode)), run("randomized", RandomizedParams(nfe=6, decode=decode))
    assert torch.equal(run("hybrid", HybridParams(nfe=6, t_star=1.0, decode=decode)), ode)
    assert torch.equal(run("hybrid", HybridParams(nfe=6, t_star=0.0, decode=decode)), rand)
    middle = run("hybrid", HybridParams(nfe=6, t_star=0.5, decode=decode))
    assert not torch.equal(ode, rand) and not torch.equal(middle, ode) and not torch.equal(middle, rand)


@pytest.mark.parametrize("sampler,kw,nfes", [
    ("randomized", {}, (1, 2, 3, 7, 16)),
    ("ode", {"solver": "euler"}, (1, 2, 3, 16)),
    ("ode", {"solver": "midpoint"}, (2, 4, 16)),
    ("ode", {"solver": "heun", "t_end": 0.999}, (2, 6)),
    ("ode", {"solver": "rk4", "t_end": 0.999}, (4, 16)),
    ("hybrid", {"t_star": 0.3}, (1, 2, 5, 16)),
    ("hybrid", {"t_star": 0.3, "solver": "rk4"}, (5, 12, 16)),
    ("hybrid", {"t_star": 0.6, "solver": "heun"}, (5, 8, 16)),
])
def test_nfe_equals_backbone_calls(net, sampler, kw, nfes):
    fam, model = net
    for nfe in nfes:
        params = fam.samplers[sampler](nfe=nfe, **kw)
        fam.check_sampler(sampler, params)
        counter = CallCounter(model)
        x = fam.sample(counter, n=3, sampler=sampler, params=params, generator=gen())
        assert counter.calls == nfe, (sampler, kw, nfe)
        assert x.shape == (3, 5) and x.dtype == torch.long


@pytest.mark.parametrize("sampler,params,match", [
    ("ode", ODEParams(nfe=6, solver="rk4", t_end=0.99), "multiple of 4"),
    ("ode", ODEParams(nfe=8, solver="rk4"), "t_end"),
    ("ode", ODEParams(nfe=8, solver="heun"), "t_end"),
    ("hybrid", HybridParams(nfe=6, solver="rk4", t_star=1.0), "no uniform grid"),
    ("hybrid", HybridParams(nfe=16, solver="rk4", t_star=0.5), "no uniform grid"),
    ("hybrid", HybridParams(nfe=4, solver="rk4", t_star=0.3), "t_end"),  # one rk4 step ends at t = 1
])
def test_impossible_samplers_are_refused(sampler, params, match):
    with pytest.raises(ValueError, match=match):
        family(5, 3).check_sampler(sampler, params)


def test_loss_of_the_exact_denoiser_beats_the_blind_one(tiny_language):
    """Cross-entropy of the exact posterior is below that of the prior marginals (which ignore x_t);
    a loss that noised with one time and told the model another would not be."""
    fam = family(tiny_language.vocab_size, tiny_language.seq_len)
    oracle = fam.oracle_model(tiny_language.posterior)
    blind = lambda x, t=None, s=None: tiny_language.posterior(torch.zeros(x.shape, dtype=torch.float64))
    x1 = tiny_language.split("validation", 512)
    exact = fam.loss(oracle, x1, generator=gen(4)).item()
    prior = fam.loss(blind, x1, generator=gen(4)).item()
    assert 0.0 < exact < 0.5 * prior  # measured 0.76 vs 4.66 nats
    # the prior-only loss is the marginal cross-entropy, independent of the path
    marg = -tiny_language.posterior(torch.zeros(len(x1), x1.shape[1], tiny_language.vocab_size,
                                                dtype=torch.float64)).gather(-1, x1[..., None]).mean()
    assert prior == pytest.approx(marg.item(), rel=1e-5)


def unigram_tv(lang, x):
    uni, _ = lang.ngram_marginals()
    emp = torch.bincount(x.flatten(), minlength=lang.vocab_size).double() / x.numel()
    return 0.5 * (emp - uni).abs().sum().item()


def test_oracle_ode_reaches_the_entropy_rate(tiny_language):
    fam = family(tiny_language.vocab_size, tiny_language.seq_len)
    h, _ = tiny_language.entropy_rate()

    def nll(sampler, params, n):
        model = CallCounter(fam.oracle_model(tiny_language.posterior))
        x = fam.sample(model, n=n, sampler=sampler, params=params, generator=gen(0))
        assert model.calls == params.nfe
        if params.nfe == 64:  # unigram frequencies as close to the marginals as real data's
            ref = tiny_language.split("test", n)
            assert unigram_tv(tiny_language, x) < 1.3 * unigram_tv(tiny_language, ref) + 0.01
        return (-tiny_language.log_prob(x) / tiny_language.seq_len).mean().item()

    assert nll("ode", ODEParams(nfe=64), 600) == pytest.approx(h, abs=0.08)
    assert nll("randomized", RandomizedParams(nfe=64), 600) == pytest.approx(h, abs=0.2)
    # one call draws every token from its marginal: far from the language
    assert nll("ode", ODEParams(nfe=1), 600) > h + 2.0


def test_float32_state_is_the_default_and_samples_the_same_language_as_float64():
    """state_precision float32 (the default) keeps the state, noise and denoiser log-probabilities
    in float32 (other noise draws than float64's, so equal in distribution, not sample for
    sample); the default is left out of a row's key, float64 enters it."""
    V, L, n = 6, 4, 2000
    prior = torch.tensor([0.45, 0.25, 0.15, 0.08, 0.05, 0.02], dtype=torch.float64)
    fam = family(V, L)
    oracle = fam.oracle_model(independent_posterior(prior.log()))
    freqs = {}
    for precision in ("float64", "float32"):
        for sampler, params in (("ode", ODEParams(nfe=16, state_precision=precision)),
                                ("randomized", RandomizedParams(nfe=16, state_precision=precision))):
            final, logp = fam.trajectory(oracle, n=n, sampler=sampler, params=params, generator=gen(4))
            assert final.dtype == logp.dtype == getattr(torch, precision), (sampler, precision)
            x = fam.sample(oracle, n=n, sampler=sampler, params=params, generator=gen(4))
            freqs[precision, sampler] = torch.bincount(x.flatten(), minlength=V).double() / x.numel()
    for (precision, sampler), freq in freqs.items():
        assert 0.5 * (freq - prior).abs().sum().item() < 0.03, (precision, sampler)
    assert ODEParams(nfe=2).state_precision == "float32" and "state_precision" not in ODEParams(nfe=2).key_dump()
    assert ODEParams(nfe=2, state_precision="float64").key_dump()["state_precision"] == "float64"
    assert HybridParams(nfe=2, state_precision="float64").key_dump()["state_precision"] == "float64"


@pytest.mark.parametrize("nfe", [1, 2, 5])
def test_sampling_skips_only_the_unread_last_euler_update(nfe):
    """`sample` decodes the last call's log P, so an all-Euler run stops at that call: the same
    calls at the same times on the same states give the full trajectory's log P bit for bit; the
    state it would have stepped to is not formed."""
    V, L, n = 12, 5, 7
    fam = family(V, L)
    torch.manual_seed(0)
    net = fam.build_model(BackboneConfig(d_model=16, n_layers=1, n_heads=2)).eval()
    calls = {True: [], False: []}
    for final_state in (True, False):
        model = lambda x, t: calls[final_state].append((x.clone(), t.clone())) or net(x, t=t)
        state, logp = fam.trajectory(model, n=n, sampler="ode", params=ODEParams(nfe=nfe),
                                     generator=gen(3), final_state=final_state)
        if final_state:
            full = logp
    assert state is None and torch.equal(logp, full)
    assert len(calls[False]) == len(calls[True]) == nfe
    for (x_a, t_a), (x_b, t_b) in zip(calls[True], calls[False]):
        assert torch.equal(x_a, x_b) and torch.equal(t_a, t_b)
