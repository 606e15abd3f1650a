import math

import pytest
import torch

from baselines.mdlm import MDLM, AncestralParams, MDLMParams
from flowbench.runner import CallCounter


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
    """With the exact posterior the continuous-time ELBO is tight: E[loss] = -log p(x) / L."""
    fam = family(tiny_language)
    oracle = fam.oracle_model(tiny_language.posterior)
    x1 = tiny_language.split("validation", 64).repeat(40, 1)
    gen = torch.Generator().manual_seed(1)
    loss = torch.stack([fam.loss(oracle, x1, generator=gen) for _ in range(5)]).mean().item()
    true = (-tiny_language.log_prob(x1) / tiny_language.seq_len).mean().item()
    assert loss == pytest.approx(true, rel=0.03)


def sample_nll(lang, fam, nfe, sampler="ancestral", n=3000):
    model = CallCounter(fam.oracle_model(lang.posterior))
    x = fam.sample(model, n=n, sampler=sampler, params=AncestralParams(nfe=nfe),
                   generator=torch.Generator().manual_seed(0))
    return x, (-lang.log_prob(x) / lang.seq_len).mean().item(), model.calls


def unigram_tv(lang, x):
    uni, _ = lang.ngram_marginals()
    emp = torch.bincount(x.flatten(), minlength=lang.vocab_size).double() / x.numel()
    return 0.5 * (emp - uni).abs().sum().item()


def test_oracle_sampler_reproduces_the_language(tiny_language):
    fam = family(tiny_language)
    h, _ = tiny_language.entropy_rate()
    x, nll, calls = sample_nll(tiny_language, fam, nfe=64)
    assert calls == 64
    assert nll == pytest.approx(h, abs=0.05)
    ref = tiny_language.split("test", len(x))
    assert unigram_tv(tiny_language, x) < 1.5 * unigram_tv(tiny_language, ref) + 0.01
    # one step reveals every token independently from its marginal: clearly off the language
    _, nll_one, _ = sample_nll(tiny_language, fam, nfe=1)
    assert nll_one > h + 0.2


def test_cached_sampler_saves_calls_and_keeps_the_distribution(tiny_language):
    fam = family(tiny_language)
    x, nll, calls = sample_nll(tiny_language, fam, nfe=256, sampler="ancestral_cached", n=16)
    assert calls < 256
    x, nll, calls = sample_nll(tiny_language, fam, nfe=64, sampler="ancestral_cached")
    _, nll_plain, _ = sample_nll(tiny_language, fam, nfe=64)
    assert nll == pytest.approx(nll_plain, abs=0.05)


def test_evidence_is_mask_or_observed(tiny_language):
    fam = family(tiny_language)
    x_t = torch.tensor([[fam.mask_id, 3, fam.mask_id, 0, 1, 2]])
    ev = fam.evidence(x_t, None)
    assert torch.all(ev[0, 0] == 0) and torch.all(ev[0, 2] == 0)
    assert ev[0, 1, 3] == 0 and torch.isinf(ev[0, 1]).sum() == tiny_language.vocab_size - 1
