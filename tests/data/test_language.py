"""The embedded language: exact likelihood, exact posterior, marginals, splits, topic memory."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from flowbench.data.corpus import CorpusError
from flowbench.data.language import HMMLanguage

N_SAMPLES = 20000


@pytest.fixture(scope="module")
def lang() -> HMMLanguage:
    return HMMLanguage(seq_len=32, seed=0)


@pytest.fixture(scope="module")
def samples(lang) -> torch.Tensor:
    return lang.sample(N_SAMPLES, generator=torch.Generator().manual_seed(1))


def _tiny(seq_len: int = 3) -> HMMLanguage:
    """K=2 topics, S=2 syntax states, V=3 words, with a forbidden transition in topic 1."""
    g = torch.Generator().manual_seed(0)

    def dist(*shape):
        w = torch.rand(*shape, dtype=torch.float64, generator=g) + 0.05
        return w / w.sum(-1, keepdim=True)

    prior, init, trans, emit = dist(2), dist(2, 2), dist(2, 2, 2), dist(2, 2, 3)
    trans[1, 0] = torch.tensor([0.0, 1.0], dtype=torch.float64)
    return HMMLanguage.from_tables(prior, init, trans, emit, words=["x", "y", "z"], seq_len=seq_len)


def _brute_probs(h: HMMLanguage) -> dict[tuple[int, ...], float]:
    """p(x) for every sequence, by summing over every topic and every syntax path."""
    K, S, V = h.emit.shape
    L = h.seq_len
    probs = {}
    for x in itertools.product(range(V), repeat=L):
        total = 0.0
        for k in range(K):
            for path in itertools.product(range(S), repeat=L):
                p = h.topic_prior[k] * h.init[k, path[0]] * h.emit[k, path[0], x[0]]
                for i in range(1, L):
                    p = p * h.trans[k, path[i - 1], path[i]] * h.emit[k, path[i], x[i]]
                total += float(p)
        probs[x] = total
    return probs


# 1. exact likelihood ------------------------------------------------------------------------
def test_log_prob_equals_brute_force_enumeration():
    h = _tiny(seq_len=3)
    probs = _brute_probs(h)
    xs = torch.tensor(list(probs))
    lp = h.log_prob(xs)
    brute = torch.tensor([probs[tuple(x.tolist())] for x in xs], dtype=torch.float64)
    assert lp.dtype == torch.float64 and lp.shape == (len(xs),)
    assert torch.allclose(lp, brute.log(), atol=1e-12, rtol=0)
    assert abs(lp.exp().sum().item() - 1.0) < 1e-12


def test_default_language_normalises_over_all_pairs():
    h = HMMLanguage(seq_len=2, seed=3)
    V = h.vocab_size
    xs = torch.cartesian_prod(torch.arange(V), torch.arange(V))      # every sequence of length 2
    lp = h.log_prob(xs)
    assert abs(torch.logsumexp(lp, 0).item()) < 1e-10
    assert torch.isfinite(lp).all()                                   # the floor: nothing is impossible


# 2. exact posterior -------------------------------------------------------------------------
def test_posterior_equals_brute_force_bayes():
    h = _tiny(seq_len=3)
    probs = _brute_probs(h)
    g = torch.Generator().manual_seed(5)
    B, L, V = 6, 3, 3
    ev = 3 * torch.randn(B, L, V, dtype=torch.float64, generator=g)
    ev[torch.rand(B, L, V, generator=g) < 0.3] = -math.inf
    ev[:, :, 0] = ev[:, :, 0].clamp_min(-5.0)            # keep every position possible
    ev[0] = 0.0                                            # no information at all
    ev[1] += 700.0                                         # huge offsets must not overflow
    post = h.posterior(ev)
    assert post.shape == (B, L, V) and post.dtype == torch.float64
    for b in range(B):
        w = {x: p * math.exp(sum(ev[b, i, x[i]].item() - 700.0 * (b == 1) for i in range(L)))
             for x, p in probs.items()}
        z = sum(w.values())
        marg = torch.zeros(L, V, dtype=torch.float64)
        for x, wx in w.items():
            for i in range(L):
                marg[i, x[i]] += wx / z
        assert torch.allclose(post[b].exp(), marg, atol=1e-12, rtol=0)
        assert torch.equal(torch.isinf(post[b]), marg == 0)
        expected = math.log(z) + 700.0 * L * (b == 1)
        assert abs(h.log_evidence_prob(ev[b:b + 1]).item() - expected) < 1e-9
    assert torch.allclose(torch.logsumexp(post, -1), torch.zeros(B, L, dtype=torch.float64), atol=1e-12)


def test_posterior_is_stable_and_shift_invariant(lang, samples):
    g = torch.Generator().manual_seed(2)
    ev = 40 * torch.randn(8, lang.seq_len, lang.vocab_size, dtype=torch.float64, generator=g)
    post = lang.posterior(ev)
    assert torch.isfinite(post).all()
    shifted = lang.posterior(ev + 1e4 * torch.randn(8, lang.seq_len, 1, dtype=torch.float64, generator=g))
    assert torch.allclose(post, shifted, atol=1e-6)
    # one-hot evidence: the posterior is certain and the evidence probability is p(x)
    x = samples[:16]
    onehot = torch.full((16, lang.seq_len, lang.vocab_size), -math.inf, dtype=torch.float64)
    onehot.scatter_(2, x[..., None], 0.0)
    assert torch.equal(lang.posterior(onehot).argmax(-1), x)
    assert torch.allclose(lang.log_evidence_prob(onehot), lang.log_prob(x), atol=1e-10)


# 3. per-token NLL ---------------------------------------------------------------------------
def test_token_nll_sums_to_log_prob_and_is_the_conditional(lang, samples):
    x = samples[:256]
    nll = lang.token_nll(x)
    assert nll.shape == x.shape and nll.dtype == torch.float64 and (nll > 0).all()
    assert torch.allclose(nll.sum(1), -lang.log_prob(x), atol=1e-9)
    # -log p(x_i | x_<i) = log p(x_<i) - log p(x_<=i), prefixes scored by open-ended evidence
    x = x[:8]
    prefix = []
    for i in range(lang.seq_len + 1):
        ev = torch.zeros(8, lang.seq_len, lang.vocab_size, dtype=torch.float64)
        ev[:, :i] = -math.inf
        ev[:, :i].scatter_(2, x[:, :i, None], 0.0)
        prefix.append(lang.log_evidence_prob(ev))
    cond = -(torch.stack(prefix[1:], 1) - torch.stack(prefix[:-1], 1))
    assert torch.allclose(nll[:8], cond, atol=1e-9)


# 4. exact n-gram marginals ------------------------------------------------------------------
def _tv_bound(p: torch.Tensor, n: int, fail_prob: float = 1e-4) -> float:
    """Upper bound on the TV between p and the empirical distribution of n sequences.

    A cell's frequency is a mean over n independent sequences of per-sequence fractions in [0, 1]
    with mean p, so its variance is at most p(1 - p)/n (a Bernoulli maximises the variance), and
    E|f - p| <= min(sqrt(p(1-p)/n), 2p). Changing one sequence moves the TV by at most 1/n, so by
    McDiarmid TV exceeds its mean by t with probability at most exp(-2 n t^2)."""
    p = p.flatten()
    mean = 0.5 * torch.minimum((p * (1 - p) / n).sqrt(), 2 * p).sum().item()
    return mean + math.sqrt(math.log(1 / fail_prob) / (2 * n))


def test_ngram_marginals_match_samples(lang, samples):
    V, (n, L) = lang.vocab_size, samples.shape
    uni, bi = lang.ngram_marginals()
    assert uni.shape == (V,) and bi.shape == (V, V)
    assert abs(uni.sum().item() - 1) < 1e-12 and abs(bi.sum().item() - 1) < 1e-12
    emp_uni = torch.bincount(samples.flatten(), minlength=V).double() / (n * L)
    emp_bi = torch.bincount((samples[:, :-1] * V + samples[:, 1:]).flatten(),
                            minlength=V * V).double().view(V, V) / (n * (L - 1))
    tv = lambda a, b: 0.5 * (a - b).abs().sum().item()
    b_uni, b_bi = _tv_bound(uni, n), _tv_bound(bi, n)
    assert tv(emp_uni, uni) < b_uni
    assert tv(emp_bi, bi) < b_bi
    # wrong marginals fail the same bounds
    perm = torch.randperm(V, generator=torch.Generator().manual_seed(0))
    assert tv(emp_uni, uni[perm]) > b_uni
    first_position = (lang.topic_prior[:, None] * lang.init).reshape(-1) @ lang.emit.reshape(-1, V)
    assert tv(emp_uni, first_position) > b_uni
    assert tv(emp_bi, bi.t()) > b_bi
    assert tv(emp_bi, uni[:, None] * uni[None, :]) > b_bi


# 5. splits and entropy rate -----------------------------------------------------------------
def test_splits_are_deterministic_and_disjoint_streams(lang):
    a = lang.split("train", 200)
    assert a.dtype == torch.long and a.shape == (200, 32)
    assert torch.equal(a, HMMLanguage(seq_len=32, seed=0).split("train", 200))
    assert torch.equal(a[:50], lang.split("train", 50))
    v, t = lang.split("validation", 200), lang.split("test", 200)
    assert not torch.equal(a, v) and not torch.equal(v, t) and not torch.equal(a, t)
    assert not torch.equal(a, HMMLanguage(seq_len=32, seed=1).split("train", 200))
    with pytest.raises(CorpusError, match="'dev'"):
        lang.split("dev", 10)


def test_entropy_rate_matches_sampled_token_nll(lang, samples):
    h, se = lang.entropy_rate()
    assert 0 < h < math.log(lang.vocab_size) and 0 < se < 0.01
    assert lang.entropy_rate() == (h, se)                      # cached
    per_seq = lang.token_nll(samples).mean(1)
    diff = per_seq.mean().item() - h
    assert abs(diff) < 5 * math.hypot(se, per_seq.std().item() / math.sqrt(len(samples)))
    # a word sequence is far from uniform: the language has structure
    assert h < math.log(lang.vocab_size) - 1.0


# 6. the topic carries information across the whole sequence ---------------------------------
def _exact_end_to_end_mi(h: HMMLanguage) -> float:
    """I(x_1; x_L) from the tables:
    p(a, b) = sum_k pi[k] sum_{s,t} init[k,s] emit[k,s,a] (trans[k]^(L-1))[s,t] emit[k,t,b]."""
    far = torch.linalg.matrix_power(h.trans, h.seq_len - 1)                  # (K, S, S)
    joint = torch.einsum("k,ks,ksa,kst,ktb->ab", h.topic_prior, h.init, h.emit, far, h.emit)
    indep = torch.outer(joint.sum(1), joint.sum(0))
    return float((joint * (joint / indep).log()).sum())


def _plugin_mi(a: torch.Tensor, b: torch.Tensor, n_a: int, n_b: int) -> float:
    joint = torch.bincount(a * n_b + b, minlength=n_a * n_b).double().view(n_a, n_b) / len(a)
    indep = torch.outer(joint.sum(1), joint.sum(0))
    nz = joint > 0
    return float((joint[nz] * (joint[nz] / indep[nz]).log()).sum())


def test_first_and_last_tokens_are_dependent_through_the_topic(lang, samples):
    assert _exact_end_to_end_mi(lang) > 0.05
    # one topic: the grammar alone forgets the first word after 31 steps
    assert _exact_end_to_end_mi(HMMLanguage(seq_len=32, seed=0, n_topics=1)) < 1e-3
    # empirically, on the topic of each word (function words form a ninth class)
    cls = torch.where(lang.topic_of >= 0, lang.topic_of, lang.n_topics)
    first, last = cls[samples[:, 0]], cls[samples[:, -1]]
    C = lang.n_topics + 1
    mi = _plugin_mi(first, last, C, C)
    g = torch.Generator().manual_seed(0)
    null = [_plugin_mi(first, last[torch.randperm(len(last), generator=g)], C, C) for _ in range(20)]
    assert mi > 10 * max(null) and mi > 0.02


# configuration -------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, name", [
    ({"seq_len": 0}, "seq_len"), ({"emission_floor": 0.0}, "emission_floor"),
    ({"emission_floor": 1.0}, "emission_floor"), ({"n_topics": 0}, "n_topics"),
    ({"n_topics": 99}, "n_topics"), ({"seed": -1}, "seed"),
    ({"topic_concentration": 0.0}, "topic_concentration"),
])
def test_bad_configuration_names_the_parameter(kwargs, name):
    with pytest.raises(CorpusError, match=name):
        HMMLanguage(**kwargs)


def test_attributes_and_description():
    h = HMMLanguage(seq_len=16, seed=2, n_topics=3, topic_concentration=0.5)
    K, S = h.init.shape
    assert HMMLanguage.name == "hmm_language" and h.exact
    assert h.vocab_size == len(h.words) == h.emit.shape[-1] and len(set(h.words)) == h.vocab_size
    assert K == 3 and h.trans.shape == (K, S, S) and h.emit.dtype == torch.float64
    assert (h.emit >= h.emission_floor / h.vocab_size).all()
    d = h.describe()
    assert d["corpus"] == "hmm_language" and d["seed"] == 2 and d["n_topics"] == 3
    assert d["emission_floor"] == 1e-4 and d["seq_len"] == 16 and d["vocab_size"] == h.vocab_size
    x = h.sample(3, generator=torch.Generator().manual_seed(0))
    assert len(h.decode(x[0]).split(" ")) == 16


# --- devices: an oracle sampler on a GPU hands posterior CUDA evidence ------------------------
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_posterior_and_sampling_run_on_the_device_of_their_input():
    h = _tiny(seq_len=4)
    g = torch.Generator(device=DEVICE).manual_seed(0)
    ev = torch.randn(3, 4, 3, dtype=torch.float64, generator=g, device=DEVICE)
    post = h.posterior(ev)
    assert post.device.type == DEVICE
    torch.testing.assert_close(post.cpu(), h.posterior(ev.cpu()))
    assert h.log_evidence_prob(ev).device.type == DEVICE
    x = h.sample(5, generator=torch.Generator(device=DEVICE).manual_seed(0))
    assert x.device.type == DEVICE and x.shape == (5, 4)
    assert h.token_nll(x).device.type == DEVICE


def test_posterior_moves_the_tables_to_the_evidence_not_the_evidence_to_the_tables():
    """Evidence on the meta device (shapes only, no data) stands in for a GPU: the tables must
    follow it there and the result must stay there."""
    h = _tiny(seq_len=4)
    ev = torch.zeros(2, 4, 3, dtype=torch.float64)
    post = h.posterior(ev.to("meta"))
    assert post.device.type == "meta" and post.shape == (2, 4, 3) and post.dtype == torch.float64
    assert {d.type for d in h._tables.devices()} == {"cpu", "meta"}
    assert h.posterior(ev).device.type == "cpu"  # the CPU copy is untouched


def test_device_tables_copy_once_per_device():
    from flowbench.data.language import DeviceTables

    a, b = torch.arange(3.0), torch.ones(2, 2)
    tables = DeviceTables(a=a, b=b)
    assert tables.on("cpu").a is a and tables.on(torch.device("cpu")).b is b  # originals, no copy
    meta = tables.on("meta")
    assert meta.a.device.type == "meta" and meta.b.shape == (2, 2)
    assert tables.on("meta") is meta  # cached: the second call copies nothing
    with pytest.raises(ValueError, match="share one device"):
        DeviceTables(a=a, b=b.to("meta"))
