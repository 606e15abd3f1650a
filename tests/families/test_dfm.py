import math

import pytest
import torch

from baselines.mdlm import MDLM, AncestralParams, MDLMParams
from flowbench.families.dfm import DFM, DFMParams, EulerParams
from flowbench.worker import CallCounter


def family(lang, **params):
    return DFM(params=DFMParams(**params), vocab_size=lang.vocab_size, seq_len=lang.seq_len)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def unigram(lang, x):
    """Empirical unigram over V + 1 ids (a leaked mask id shows up in the last bin)."""
    return torch.bincount(x.flatten(), minlength=lang.vocab_size + 1).double() / x.numel()


def tv(p, q):
    return 0.5 * (p - q).abs().sum().item()


def data_tv(lang, x):
    uni, _ = lang.ngram_marginals()
    return tv(unigram(lang, x), torch.cat([uni, uni.new_zeros(1)]))


def sample(lang, fam, *, nfe, n, seed=0, step="rate"):
    """Oracle samples, their exact NLL per token (n,) and the number of backbone calls."""
    model = CallCounter(fam.oracle_model(lang.posterior))
    x = fam.sample(model, n=n, sampler="euler", params=EulerParams(nfe=nfe, step=step), generator=gen(seed))
    return x, -lang.log_prob(x) / lang.seq_len, model.calls


# --- the path -----------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_source_at_t0_data_at_t1(tiny_language, source):
    fam = family(tiny_language, source=source, n=2.0)
    x1 = tiny_language.split("train", 4000)
    B, V = len(x1), tiny_language.vocab_size
    x_t, src = fam.corrupt(x1, torch.zeros(B), generator=gen(0), return_source=True)
    assert src.all()
    if source == "mask":
        assert (x_t == fam.mask_id).all()
    else:  # uniform ids, independent of the data
        emp = unigram(tiny_language, x_t)
        assert tv(emp, torch.cat([torch.full((V,), 1.0 / V), torch.zeros(1)])) < 0.1
        assert (x_t == x1).double().mean().item() == pytest.approx(1.0 / V, abs=0.003)
    x_t, src = fam.corrupt(x1, torch.ones(B), generator=gen(0), return_source=True)
    assert not src.any() and torch.equal(x_t, x1)


@pytest.mark.parametrize("source", ["mask", "uniform"])
@pytest.mark.parametrize("n", [0.5, 2.0])
@pytest.mark.parametrize("t", [0.3, 0.8])
def test_corrupted_fraction_is_one_minus_kappa(tiny_language, source, n, t):
    fam = family(tiny_language, source=source, n=n)
    x1 = tiny_language.split("train", 4000)
    x_t, src = fam.corrupt(x1, torch.full((len(x1),), t), generator=gen(1), return_source=True)
    kappa, V = t ** n, tiny_language.vocab_size
    assert src.double().mean().item() == pytest.approx(1 - kappa, abs=0.01)
    assert torch.equal(x_t[~src], x1[~src])  # positions not drawn from the source are the data
    if source == "mask":
        assert torch.equal(x_t == fam.mask_id, src)
    else:  # a source draw equals the data token with probability 1 / V
        assert (x_t != x1).double().mean().item() == pytest.approx((1 - kappa) * (1 - 1 / V), abs=0.01)


def test_uniform_evidence_is_the_corruption_likelihood(tiny_language):
    """exp(evidence[x_t, v]) is p(x_t | x_1 = v): a distribution over x_t that `corrupt` follows."""
    fam = family(tiny_language, source="uniform", n=2.0)
    V, t = tiny_language.vocab_size, 0.7
    x1 = tiny_language.split("train", 4000)
    x_t = fam.corrupt(x1, torch.full((len(x1),), t), generator=gen(2))
    ev = fam.evidence(x_t, torch.full((len(x1),), t))  # (B, L, V)
    assert ev.dtype == torch.float64
    lik = ev.exp()
    p_same = lik.gather(-1, x_t[..., None])  # p(x_t^i | x_1^i = x_t^i)
    p_other = (lik.sum(-1, keepdim=True) - p_same) / (V - 1)  # p(x_t^i | x_1^i = v), any v != x_t^i
    assert torch.allclose(p_same + (V - 1) * p_other, torch.ones_like(p_same))  # a distribution over x_t
    assert torch.allclose(p_same, torch.full_like(p_same, t ** 2 + (1 - t ** 2) / V))
    # the corruption keeps x_t^i = x_1^i with exactly that probability
    assert (x_t == x1).double().mean().item() == pytest.approx(p_same.mean().item(), abs=0.01)


def test_mask_evidence_is_mask_or_observed(tiny_language):
    fam = family(tiny_language)
    x_t = torch.tensor([[fam.mask_id, 3, fam.mask_id, 0, 1, 2]])
    ev = fam.evidence(x_t, torch.tensor([0.4]))
    assert torch.all(ev[0, 0] == 0) and torch.all(ev[0, 2] == 0)
    assert ev[0, 1, 3] == 0 and torch.isinf(ev[0, 1]).sum() == tiny_language.vocab_size - 1


# --- the sampler ----------------------------------------------------------------------------
class StepStamp:
    """A fake network that puts all its mass on token k at its k-th call and records (x, t)."""

    def __init__(self, V):
        self.V, self.inputs, self.times = V, [], []

    def __call__(self, x, t=None, s=None):
        k = len(self.inputs)
        self.inputs.append(x.clone())
        self.times.append(t.clone())
        logits = torch.full((*x.shape, self.V), -math.inf)
        logits[..., k] = 0.0
        return logits


@pytest.mark.parametrize("source", ["mask", "uniform"])
@pytest.mark.parametrize("n,step", [(1.0, "rate"), (2.0, "rate"), (2.0, "exact"), (0.5, "exact")])
def test_euler_jump_schedule_and_time_grid(source, n, step):
    """At call k the model sees t_k = k / nfe; step k moves a fraction p_k of the positions that may
    jump (masked ones for the mask source, all for uniform) and the last step moves all of them."""
    V, nfe, N = 8, 4, 20000  # a small vocabulary: the fake network needs no language
    fam = DFM(params=DFMParams(source=source, n=n), vocab_size=V, seq_len=6)
    model = StepStamp(V)
    x = fam.sample(model, n=N, sampler="euler", params=EulerParams(nfe=nfe, step=step), generator=gen(3))
    assert len(model.inputs) == nfe
    for k, t in enumerate(model.times):
        assert t.shape == (N,) and torch.allclose(t.double(), torch.full((N,), k / nfe, dtype=torch.float64))
    h, kap = 1.0 / nfe, lambda s: s ** n
    if step == "rate":  # kappa'_0 = n 0^(n - 1): infinite for n < 1, so every position jumps
        p = [1.0 if k == 0 and n < 1 else min(1.0, h * n * (k * h) ** (n - 1) / (1 - kap(k * h)))
             for k in range(nfe)]
    else:
        p = [(kap((k + 1) * h) - kap(k * h)) / (1 - kap(k * h)) for k in range(nfe)]
    p[-1] = 1.0
    states = model.inputs[1:] + [x]  # state after step k
    alive = 1.0  # probability a position has not jumped yet (mask source: is still masked)
    for k, after in enumerate(states):
        frac = (after == k).double().mean().item()
        if source == "mask":
            expected = alive * p[k]
        else:  # token k comes from a jump in step k, or is a source draw that never jumped
            expected = p[k] + (1 - p[k]) * alive / V
        alive *= 1 - p[k]
        if source == "mask":
            assert (after == fam.mask_id).double().mean().item() == pytest.approx(alive, abs=0.01)
        assert frac == pytest.approx(expected, abs=0.01)
    assert int(x.max()) < V


@pytest.mark.parametrize("source", ["mask", "uniform"])
@pytest.mark.parametrize("nfe", [1, 3, 7])
def test_nfe_equals_backbone_calls(tiny_language, source, nfe):
    fam = family(tiny_language, source=source)
    x, _, calls = sample(tiny_language, fam, nfe=nfe, n=8)
    assert calls == nfe
    assert x.shape == (8, tiny_language.seq_len) and x.dtype == torch.long
    assert 0 <= int(x.min()) and int(x.max()) < tiny_language.vocab_size  # no mask id left


@pytest.mark.parametrize("source,nfe,tol", [("mask", 64, 0.15), ("uniform", 32, 0.08)])
def test_oracle_sampler_reproduces_the_language(tiny_language, source, nfe, tol):
    fam = family(tiny_language, source=source)
    h, _ = tiny_language.entropy_rate()
    x, nll, calls = sample(tiny_language, fam, nfe=nfe, n=800)
    assert calls == nfe
    assert nll.mean().item() == pytest.approx(h, abs=tol)
    ref = tiny_language.split("test", len(x))
    assert data_tv(tiny_language, x) < 1.5 * data_tv(tiny_language, ref) + 0.01
    # one step draws every token independently from its marginal: clearly off the language
    _, nll_one, _ = sample(tiny_language, fam, nfe=1, n=800)
    assert nll_one.mean().item() > h + 2.0


def test_rate_form_wastes_steps_where_the_scheduler_is_singular(tiny_language):
    """kappa_t = t^0.5: kappa'_0 = inf, so the rate form reveals everything in its first step and
    NFE 4 samples like NFE 1; the exact form spreads the reveals and does much better."""
    fam = family(tiny_language, n=0.5)
    _, one, _ = sample(tiny_language, fam, nfe=1, n=1000, seed=4)
    _, rate, _ = sample(tiny_language, fam, nfe=4, n=1000, seed=5)
    _, exact, _ = sample(tiny_language, fam, nfe=4, n=1000, seed=5, step="exact")
    se = math.sqrt(one.var().item() / len(one) + rate.var().item() / len(rate))
    assert abs(rate.mean().item() - one.mean().item()) < 4 * se
    assert exact.mean().item() < one.mean().item() - 1.5


# --- cross-check with MDLM ------------------------------------------------------------------
@pytest.mark.parametrize("t", [0.2, 0.7, 0.9])
def test_mask_path_equals_mdlm_loglinear(tiny_language, t):
    dfm = family(tiny_language, n=1.0)
    mdlm = MDLM(params=MDLMParams(schedule="loglinear"), vocab_size=tiny_language.vocab_size,
                seq_len=tiny_language.seq_len)
    assert dfm.mask_id == mdlm.mask_id
    x1 = tiny_language.split("train", 4000)
    tt = torch.full((len(x1),), t)
    a, b = dfm.corrupt(x1, tt, generator=gen(5)), mdlm.corrupt(x1, tt, generator=gen(6))
    ma, mb = (a == dfm.mask_id).double(), (b == mdlm.mask_id).double()
    se = math.sqrt(t * (1 - t) / len(x1))
    for m in (ma, mb):  # per position: masked with probability 1 - t
        assert (m.mean(0) - (1 - t)).abs().max().item() < 4 * se
    assert (ma.mean(0) - mb.mean(0)).abs().max().item() < 4 * math.sqrt(2) * se
    # independent corruptions of the same data agree (same token or both masked) w.p. t^2 + (1-t)^2
    agree = (a == b).double().mean().item()
    assert agree == pytest.approx(t ** 2 + (1 - t) ** 2, abs=0.01)
    assert torch.equal(a[a != dfm.mask_id], x1[a != dfm.mask_id])


@pytest.mark.parametrize("nfe", [1, 2, 4, 8])
def test_euler_sampler_equals_mdlm_ancestral(tiny_language, nfe):
    """kappa_t = t: the rate h / (1 - t_k) is MDLM's exact reveal probability, at every NFE."""
    dfm = family(tiny_language, n=1.0)
    mdlm = MDLM(params=MDLMParams(), vocab_size=tiny_language.vocab_size,
                seq_len=tiny_language.seq_len)
    x_a, nll_a, _ = sample(tiny_language, dfm, nfe=nfe, n=1000, seed=7)
    model = CallCounter(mdlm.oracle_model(tiny_language.posterior))
    x_b = mdlm.sample(model, n=1000, sampler="ancestral", params=AncestralParams(nfe=nfe), generator=gen(8))
    nll_b = -tiny_language.log_prob(x_b) / tiny_language.seq_len
    se = math.sqrt(nll_a.var().item() / len(nll_a) + nll_b.var().item() / len(nll_b))
    assert abs(nll_a.mean().item() - nll_b.mean().item()) < 4 * se
    ref_a, ref_b = tiny_language.split("test", 1000), tiny_language.split("validation", 1000)
    ref = tv(unigram(tiny_language, ref_a), unigram(tiny_language, ref_b))
    assert tv(unigram(tiny_language, x_a), unigram(tiny_language, x_b)) < 1.5 * ref + 0.01


@pytest.mark.parametrize("step,nfes", [("exact", (1, 3, 4, 7, 64)), ("rate", (1, 2, 4, 64))])
def test_mask_source_samples_are_mdlm_samples_bit_for_bit(tiny_language, step, nfes):
    """kappa_t = t: the same network and seed give the same tensors as MDLM's ancestral sampler, and
    the same corruption and evidence (both run the one masked path, flowbench/families/mixture.py).
    The rate form's h / (1 - t_k) equals (t_{k+1} - t_k) / (1 - t_k) to the bit where k / nfe is exact
    (nfe a power of two; at 3, 5, 6, ... the two differ by rounding)."""
    from flowbench.config import BackboneConfig

    dfm = family(tiny_language, n=1.0, evidence_head=False)
    mdlm = MDLM(params=MDLMParams(), vocab_size=tiny_language.vocab_size, seq_len=tiny_language.seq_len)
    torch.manual_seed(0)
    net = mdlm.build_model(BackboneConfig(d_model=32, n_layers=1, n_heads=2)).eval()
    for model in (net, mdlm.oracle_model(tiny_language.posterior)):
        for nfe in nfes:
            with torch.no_grad():
                a = dfm.sample(model, n=64, sampler="euler", params=EulerParams(nfe=nfe, step=step), generator=gen(nfe))
                b = mdlm.sample(model, n=64, sampler="ancestral", params=AncestralParams(nfe=nfe), generator=gen(nfe))
            assert torch.equal(a, b), (nfe, step)
    x1 = tiny_language.split("train", 64)
    t = torch.rand(64, generator=gen(1), dtype=torch.float64)
    x_t = dfm.corrupt(x1, t, generator=gen(2))
    assert torch.equal(x_t, mdlm.corrupt(x1, t, generator=gen(2)))
    assert torch.equal(dfm.evidence(x_t, t), mdlm.evidence(x_t, t))


def test_jump_probabilities_match_mdlm_only_for_the_linear_scheduler(tiny_language):
    nfe = 4
    mdlm_reveal = torch.tensor([1 / 4, 1 / 3, 1 / 2, 1.0], dtype=torch.float64)  # (k_{+1} - k) / (1 - k)
    lin = family(tiny_language, n=1.0)
    for step in ("rate", "exact"):
        assert torch.allclose(lin.jump_probabilities(nfe=nfe, step=step), mdlm_reveal)
    sq = family(tiny_language, n=2.0)
    assert sq.jump_probabilities(nfe=nfe, step="rate")[0] == 0.0  # kappa'_0 = 0: a wasted step
    assert sq.jump_probabilities(nfe=nfe, step="exact")[0] == pytest.approx(1 / 16)


# --- the loss -------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1.0, 2.0])
def test_gkl_of_exact_denoiser_is_the_true_nll_for_the_mask_source(tiny_language, n):
    """Mask source: the generalized KL is MDLM's ELBO, tight for the exact posterior, whatever kappa."""
    fam = family(tiny_language, n=n, weighting="gkl")
    oracle = fam.oracle_model(tiny_language.posterior)
    x1 = tiny_language.split("validation", 64).repeat(20, 1)
    g = gen(9)
    loss = torch.stack([fam.loss(oracle, x1, generator=g) for _ in range(8)]).mean().item()
    true = (-tiny_language.log_prob(x1) / tiny_language.seq_len).mean().item()
    assert loss == pytest.approx(true, rel=0.04)


def test_gkl_of_exact_denoiser_bounds_the_true_nll_for_the_uniform_source(tiny_language):
    fam = family(tiny_language, source="uniform", weighting="gkl")
    oracle = fam.oracle_model(tiny_language.posterior)
    x1 = tiny_language.split("validation", 64).repeat(20, 1)
    g = gen(10)
    loss = torch.stack([fam.loss(oracle, x1, generator=g) for _ in range(8)]).mean().item()
    true = (-tiny_language.log_prob(x1) / tiny_language.seq_len).mean().item()
    assert true + 0.1 < loss < 1.5 * true  # a bound, not tight: the uniform path is not absorbing


@pytest.mark.parametrize("source", ["mask", "uniform"])
@pytest.mark.parametrize("weighting", ["ce", "gkl"])
def test_loss_is_minimised_by_the_exact_posterior(tiny_language, source, weighting):
    """Same noise, same batch: sharpening or flattening the exact posterior raises the loss."""
    fam = family(tiny_language, source=source, weighting=weighting)
    oracle = fam.oracle_model(tiny_language.posterior)
    x1 = tiny_language.split("validation", 512)
    losses = {}
    for temp in (0.7, 1.0, 1.4):
        model = lambda x, t=None, s=None, temp=temp: oracle(x, t=t) / temp
        losses[temp] = fam.loss(model, x1, generator=gen(11)).item()
    assert losses[1.0] < losses[0.7] and losses[1.0] < losses[1.4]


@pytest.mark.parametrize("source", ["mask", "uniform"])
@pytest.mark.parametrize("n", [1.0, 2.0])
def test_ce_targets_the_clean_tokens(tiny_language, source, n):
    """A network that knows x_1 and gives it probability 0.9 costs -log 0.9 per scored position:
    every position for the uniform source, the masked ones (fraction E[1 - t^n] = n / (n + 1)) for mask."""
    fam = family(tiny_language, source=source, n=n)
    V = tiny_language.vocab_size
    x1 = tiny_language.split("train", 4000)
    logits = torch.full((*x1.shape, V), math.log(0.1 / (V - 1))).scatter_(-1, x1[..., None], math.log(0.9))
    loss = fam.loss(lambda x, t=None, s=None: logits, x1, generator=gen(12)).item()
    scored = 1.0 if source == "uniform" else n / (n + 1)
    assert loss == pytest.approx(-math.log(0.9) * scored, rel=0.02)
