"""The randomized sampler (seed 004_*.txt, section 2.3) shared by kl_flow, flow_map and
dirichlet_flow: draw x_1 from the denoiser, re-draw the path one grid time later."""
import pytest
import torch

from flowbench.families.base import randomized_steps
from flowbench.families.dirichlet_flow import DirichletFlow, DirichletFlowParams
from flowbench.families.dirichlet_flow import RandomizedParams as DirichletRandomized
from flowbench.families.flow_map import FlowMap, FlowMapParams, RandomizedSamplerParams
from flowbench.worker import CallCounter


pytestmark = pytest.mark.usefixtures("one_thread")


def test_each_step_reads_the_path_redrawn_at_the_next_time():
    """denoise sees t_0..t_{K-1} in order, each time on the state renoise drew at that time from
    the previous draw; the last call is only read."""
    V, grid = 5, torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    seen, drawn = [], []

    def denoise(x, t):
        seen.append((float(t), x.clone()))
        return torch.full((2, 3, V), -30.0).scatter_(-1, torch.full((2, 3, 1), len(seen) % V), 30.0)

    def renoise(x1, t):
        drawn.append((float(t), x1.clone()))
        return float(t) + x1[..., None].double().expand(2, 3, V)

    x0 = torch.zeros(2, 3, V, dtype=torch.float64)
    x, logits = randomized_steps(denoise, renoise, x0, grid, generator=torch.Generator().manual_seed(0))
    assert [t for t, _ in seen] == [0.0, 0.25, 0.5] and [t for t, _ in drawn] == [0.25, 0.5]
    assert torch.equal(seen[0][1], x0)
    for k, (t, x1) in enumerate(drawn):   # the k-th call's (near one-hot) logits were drawn from
        assert (x1 == (k + 1) % V).all() and torch.equal(seen[k + 1][1], t + x1[..., None].double().expand(2, 3, V))
    assert torch.equal(x, seen[-1][1]) and logits.argmax(-1).eq(3).all()
    assert randomized_steps(denoise, renoise, x0, grid[:1], generator=None) == (x0, None)


def _nll(lang, fam, params, n, model=None):
    model = CallCounter(model or fam.oracle_model(lang.posterior))
    x = fam.sample(model, n=n, sampler="randomized", params=params, generator=torch.Generator().manual_seed(0))
    assert model.calls == params.nfe and x.shape == (n, lang.seq_len)
    return (-lang.log_prob(x) / lang.seq_len).mean().item()


@pytest.mark.parametrize("name", ["flow_map", "dirichlet_flow"])
def test_oracle_randomized_sampler_reproduces_the_language(tiny_language, name):
    """With the exact denoiser the sampler reaches the entropy rate; one call draws every token
    from its marginal, far from it; the error shrinks as the grid refines."""
    if name == "flow_map":
        fam = FlowMap(params=FlowMapParams(), vocab_size=tiny_language.vocab_size, seq_len=tiny_language.seq_len)
        params = RandomizedSamplerParams
    else:
        fam = DirichletFlow(params=DirichletFlowParams(), vocab_size=tiny_language.vocab_size,
                            seq_len=tiny_language.seq_len)
        params = DirichletRandomized
    h, _ = tiny_language.entropy_rate()
    # measured (n = 600): NFE 24 / 48 / 96 / 192 at h + 0.39 / 0.20 / 0.08 / 0.05 (flow_map),
    # h + 0.43 / 0.20 / 0.07 / 0.05 (dirichlet_flow, the warp t_mid 1/V, s 1; its band-focused
    # default grid is within 0.09 of NFE 96 at NFE 24): each step draws the positions independently
    fine = _nll(tiny_language, fam, params(nfe=96), n=600)
    assert fine == pytest.approx(h, abs=0.15)
    coarse = 24 if name == "flow_map" else 6
    assert _nll(tiny_language, fam, params(nfe=coarse), n=600) > fine + 0.15
    assert _nll(tiny_language, fam, params(nfe=1), n=300) > h + 1.0


def test_dirichlet_randomized_needs_the_denoiser_head(tiny_language):
    fam = DirichletFlow(params=DirichletFlowParams(head="velocity"), vocab_size=tiny_language.vocab_size,
                        seq_len=tiny_language.seq_len)
    with pytest.raises(ValueError, match="head='denoiser'"):
        fam.check_sampler("randomized", DirichletRandomized(nfe=4))


def test_consistency_sampler_restarts_from_the_path_at_its_read(tiny_language):
    """Each call after the first reads I_t = (1 - t) x_0' + t e_{x_1} at the next grid time, x_1
    the previous call's argmax and x_0' fresh N(0, I) noise; the calls ask for delta_{t_j,1}; with
    the exact map every NFE samples the language (a re-noised sample is a path sample)."""
    from flowbench.families.flow_map import ConsistencySamplerParams
    fam = FlowMap(params=FlowMapParams(), vocab_size=tiny_language.vocab_size, seq_len=tiny_language.seq_len)
    oracle, calls = fam.oracle_model(tiny_language.posterior), []

    def spy(x, s, t):
        out = oracle(x, s=s, t=t)
        calls.append((x.clone(), s.clone(), t.clone(), out.argmax(-1)))
        return out

    params = ConsistencySamplerParams(nfe=4, t_first=0.5, t_last=0.9)
    x = fam.sample(spy, n=400, sampler="consistency", params=params, generator=torch.Generator().manual_seed(0))
    assert [round(float(s[0]), 6) for _, s, _, _ in calls] == [0.0, 0.5, 0.7, 0.9]
    assert all((t == 1).all() for _, _, t, _ in calls)
    for (_, _, _, read), (x_next, s_next, _, _) in zip(calls, calls[1:]):
        t = float(s_next[0])
        noise = x_next.double() - t * torch.nn.functional.one_hot(read, fam.vocab_size).double()
        assert noise.mean().abs() < 0.02 and noise.std().item() == pytest.approx(1 - t, rel=0.02)
    assert torch.equal(x, calls[-1][3])
    h, _ = tiny_language.entropy_rate()
    # measured (n = 400): NFE 1 / 2 / 4 at h + 0.03 / 0.03 / 0.01
    for nfe in (1, 2, 4):
        got = fam.sample(oracle, n=400, sampler="consistency", params=ConsistencySamplerParams(nfe=nfe),
                         generator=torch.Generator().manual_seed(1))
        assert (-tiny_language.log_prob(got) / tiny_language.seq_len).mean().item() == pytest.approx(h, abs=0.15)


def test_consistency_sampler_grid_is_validated():
    from flowbench.families.flow_map import ConsistencySamplerParams
    assert ConsistencySamplerParams(nfe=2).times().tolist() == [0.0, 0.6]
    assert ConsistencySamplerParams(nfe=3).times().tolist() == pytest.approx([0.0, 0.6, 0.8])
    assert ConsistencySamplerParams(nfe=1).times().tolist() == [0.0]
    with pytest.raises(ValueError, match="t_first <= t_last"):
        ConsistencySamplerParams(nfe=4, t_first=0.9, t_last=0.5)


def test_consistency_sampler_nucleus_read_draws_only_the_nucleus():
    """read='sample' with read_top_p draws each intermediate endpoint from the nucleus of
    delta_{t_j,1}: with masses 0.5 / 0.3 / 0.2 spread over the rest, read_top_p 0.6 keeps the first
    two tokens in the ratio 5 : 3; a full draw (read_top_p 1) also reads the rest. The read is seen
    in the next state I_{0.99} = 0.01 x_0' + 0.99 e_{x_1}, whose argmax it is."""
    from flowbench.families.flow_map import ConsistencySamplerParams
    V, L, n = 16, 4, 2000
    fam = FlowMap(params=FlowMapParams(), vocab_size=V, seq_len=L)
    probs = torch.full((V,), 0.2 / (V - 2))
    probs[0], probs[1] = 0.5, 0.3
    seen = []

    def model(x, s, t):
        if float(s[0]) > 0:
            seen.append(x.argmax(-1))
        return probs.log().expand(x.shape[0], L, V).clone()

    def reads(top_p):
        seen.clear()
        params = ConsistencySamplerParams(nfe=2, t_first=0.99, t_last=0.99, read="sample", read_top_p=top_p)
        fam.sample(model, n=n, sampler="consistency", params=params, generator=torch.Generator().manual_seed(0))
        return seen[0].flatten()

    cut = reads(0.6)
    assert set(cut.unique().tolist()) == {0, 1}
    assert (cut == 0).double().mean().item() == pytest.approx(0.5 / 0.8, abs=0.02)
    full = reads(1.0)
    assert (full > 1).double().mean().item() == pytest.approx(0.2, abs=0.02)
    with pytest.raises(ValueError, match="read_top_p"):
        ConsistencySamplerParams(nfe=2, read_top_p=0.5)
