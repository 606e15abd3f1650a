import math

import pytest
import torch

from baselines.mdlm import MDLM, AncestralParams, MDLMParams
import flowbench.families.base as base
from flowbench.worker import CallCounter


def family(lang, **params):
    return MDLM(params=MDLMParams(**params), vocab_size=lang.vocab_size, seq_len=lang.seq_len)


@pytest.mark.parametrize("schedule", ["loglinear", "linear"])
@pytest.mark.parametrize("t", [0.2, 0.9])
def test_forward_process_masks_expected_fraction(tiny_language, schedule, t):
    fam = family(tiny_language, schedule=schedule)
    x1 = tiny_language.split("train", 4000)
    x_t = fam.corrupt(x1, torch.full((len(x1),), t), generator=torch.Generator().manual_seed(0))
    expected = 1 - fam.schedule(torch.tensor(t, dtype=torch.float64)).kappa.item()
    assert (x_t == fam.mask_id).double().mean().item() == pytest.approx(expected, abs=0.01)
    assert torch.equal(x_t[x_t != fam.mask_id], x1[x_t != fam.mask_id])  # unmasked tokens are the data


def test_elbo_of_exact_denoiser_equals_true_nll(tiny_language):
    """With the exact posterior the continuous-time ELBO is tight: E[loss] = -log p(x) / L.

    (Each random reveal order is a chain-rule factorisation of p(x).) The weight 1/(1 - t)
    makes the estimator heavy-tailed near t = 1, so the test clamps t a little earlier."""
    fam = family(tiny_language, eps=0.02)
    oracle = fam.oracle_model(tiny_language.posterior)
    x1 = tiny_language.split("validation", 64).repeat(100, 1)
    gen = torch.Generator().manual_seed(1)
    loss = torch.stack([fam.loss(oracle, x1, generator=gen) for _ in range(6)]).mean().item()
    true = (-tiny_language.log_prob(x1) / tiny_language.seq_len).mean().item()
    assert loss == pytest.approx(true, rel=0.03)


def sample_nll(lang, fam, nfe, sampler="ancestral", n=2000):
    model = CallCounter(fam.oracle_model(lang.posterior))
    x = fam.sample(model, n=n, sampler=sampler, params=AncestralParams(nfe=nfe),
                   generator=torch.Generator().manual_seed(0))
    nll = -lang.log_prob(x) / lang.seq_len
    return x, nll.mean().item(), nll.std().item() / math.sqrt(n), model.calls


def unigram_tv(lang, x):
    uni, _ = lang.ngram_marginals()
    emp = torch.bincount(x.flatten(), minlength=lang.vocab_size).double() / x.numel()
    return 0.5 * (emp - uni).abs().sum().item()


def test_oracle_sampler_reproduces_the_language(micro_language):
    lang = micro_language
    fam = family(lang)
    h, _ = lang.entropy_rate()
    x, nll, se, calls = sample_nll(lang, fam, nfe=128, n=1000)
    assert calls == 128
    assert nll == pytest.approx(h, abs=4 * se + 0.03)
    ref = lang.split("test", len(x))
    assert unigram_tv(lang, x) < 1.5 * unigram_tv(lang, ref) + 0.01
    # one step reveals every token independently from its marginal: clearly off the language
    _, nll_one, se_one, _ = sample_nll(lang, fam, nfe=1, n=1000)
    assert nll_one > h + 4 * se_one + 0.1


def test_cached_sampler_saves_calls_and_draws_the_same_samples(micro_language):
    """The network ignores t, so reusing its output while no token changed is exact: with the
    same seed the cached sampler returns the very same samples for fewer calls."""
    fam = family(micro_language)
    x_plain, _, _, calls_plain = sample_nll(micro_language, fam, nfe=256, n=16)
    x_cached, _, _, calls_cached = sample_nll(micro_language, fam, nfe=256, sampler="ancestral_cached", n=16)
    assert calls_plain == 256 and calls_cached < 128
    assert torch.equal(x_plain, x_cached)


def test_evidence_is_mask_or_observed(tiny_language):
    fam = family(tiny_language)
    x_t = torch.tensor([[fam.mask_id, 3, fam.mask_id, 0, 1, 2]])
    ev = fam.evidence(x_t, None)
    assert torch.all(ev[0, 0] == 0) and torch.all(ev[0, 2] == 0)
    assert ev[0, 1, 3] == 0 and torch.isinf(ev[0, 1]).sum() == tiny_language.vocab_size - 1


class HostReads(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts reads of a tensor's value by the host (`.item()`, `bool(t)`): on a GPU each one
    waits for every queued kernel."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func is torch.ops.aten._local_scalar_dense.default
        return func(*args, **(kwargs or {}))


def test_plain_sampler_never_reads_device_values_on_the_host(micro_language, monkeypatch):
    """As dfm's Euler sampler: the GPU runs ahead through every step. Only the cached sampler
    must ask, once a step, whether any token changed. Under the GPU's policy the categorical draw
    does not pick the revealed rows on the host; under the CPU's it does, with the same tokens."""
    fam = family(micro_language)
    logits = torch.randn(4, micro_language.seq_len, micro_language.vocab_size)

    def draw(sampler, nfe=8):
        with HostReads() as reads:
            x = fam.sample(lambda x: logits, n=4, sampler=sampler, params=AncestralParams(nfe=nfe),
                           generator=torch.Generator().manual_seed(0))
        return x, reads.count

    x_cpu_policy, cpu_reads = draw("ancestral")
    monkeypatch.setattr(base, "picks_rows_on_host", lambda device: False)
    (x_plain, plain), (x_cached, cached) = draw("ancestral"), draw("ancestral_cached")
    assert plain == 0 and cached == 8
    assert torch.equal(x_plain, x_cached) and torch.equal(x_plain, x_cpu_policy)
    assert cpu_reads > 0 and (x_plain >= 0).all()
