"""Recipe ingredients shared by the families: training-time distributions and the evidence head."""
import math

import pytest
import torch

from flowbench.config import BackboneConfig
from flowbench.families.base import EvidenceHead
from flowbench.families.time_sampling import TimeSampling
from flowbench.registry import FAMILIES


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def backbone(model):
    """The Backbone inside a model's wrappers (evidence head, posterior or softmax input)."""
    from flowbench.backbone import Backbone

    while not isinstance(model, Backbone):
        model = model.net if hasattr(model, "net") else model.backbone
    return model


@pytest.mark.parametrize("dist", [TimeSampling(kind="uniform", low=0.1, high=0.4),
                                  TimeSampling(kind="logit_normal", loc=-1.0, scale=0.8)])
def test_time_samples_follow_the_declared_density(dist):
    t = torch.cat([dist.sample(512, generator=gen(k)) for k in range(40)])  # 20480 times
    edges = torch.linspace(0.0, 1.0, 41, dtype=torch.float64)
    counts = torch.histc(t, bins=40, min=0.0, max=1.0)
    # expected mass per bin: the declared density integrated by the midpoint rule on 50 sub-points
    sub = edges[:-1, None] + (torch.arange(50) + 0.5)[None] / 50 * (edges[1] - edges[0])
    expected = dist.density(sub.clamp(1e-9, 1 - 1e-9)).mean(1) * (edges[1] - edges[0]) * len(t)
    assert expected.sum().item() == pytest.approx(len(t), rel=0.01)  # the density integrates to 1
    big = expected > 20
    chi2 = ((counts[big] - expected[big]) ** 2 / expected[big]).sum().item()
    assert chi2 < 3 * big.sum().item(), chi2  # stratified draws sit well inside the chi-square range
    # a wrong density (the other kind's) is far off
    other = TimeSampling(kind="uniform") if dist.kind == "logit_normal" else TimeSampling(kind="logit_normal")
    wrong = other.density(sub.clamp(1e-9, 1 - 1e-9)).mean(1) * (edges[1] - edges[0]) * len(t)
    assert ((counts[big] - wrong[big]) ** 2 / wrong[big].clamp_min(1)).sum().item() > 20 * chi2


def test_default_time_sampling_is_stratified_uniform():
    t = TimeSampling().sample(8, generator=gen(3))
    u = torch.rand((), generator=gen(3), dtype=torch.float64)
    assert torch.equal(t, (u + torch.arange(8, dtype=torch.float64) / 8) % 1.0)


def test_time_sampling_rejects_an_empty_band():
    with pytest.raises(ValueError, match="low < high"):
        TimeSampling(low=0.5, high=0.5)


# --- the evidence head ---------------------------------------------------------------------------
V, L, N = 8, 4, 6000


def draws(name, fam, x1, t):
    """(network input, model kwargs) of the family's path at time t (N,) for clean ids x1."""
    g = gen(5)
    if name == "kl_flow":
        return fam.model_input(fam.interpolate(x1, t, generator=g)).float(), {"t": t}
    if name == "dfm":
        return fam.corrupt(x1, t, generator=g), {"t": t}
    if name == "dirichlet_flow":
        tt = fam.warp.to_t(t)
        return fam.path(fam.prior(tuple(x1.shape), generator=g), x1, t=tt).float(), {"t": t}
    # flow_map: delta_{s,t} from x_s; its evidence is the state's, at s (not at the target time t)
    return fam.interpolate(x1, t=t, generator=g), {"s": t, "t": (t + 0.35).clamp(max=1.0)}


CASES = {  # family: (params, model time) where a token is neither hopeless nor decided
    "kl_flow": ({}, 0.1),
    "dfm": ({"source": "uniform"}, 0.3),
    "dirichlet_flow": ({"head": "denoiser", "warp_center": None, "warp_spread": 1.0}, 0.3),  # u = F(t): t near 1/V (V = 8)
    "flow_map": ({}, 0.55),
}


@pytest.mark.parametrize("name", list(CASES))
def test_evidence_head_with_a_zero_network_is_the_single_position_posterior(name):
    """With x_1 uniform and i.i.d. the single-position posterior is the Bayes predictor of x_1^i
    from x_t^i alone: its cross-entropy on path draws beats the same logits scaled up or down
    (a wrong t-scaling) or negated (a sign error)."""
    params, time = CASES[name]
    cls = FAMILIES.get(name)
    fam = cls(params=cls.Params(evidence_head=True, **params), vocab_size=V, seq_len=L)
    model = fam.build_model(BackboneConfig(d_model=16, n_layers=1, n_heads=2))
    assert isinstance(model, EvidenceHead)
    torch.nn.init.zeros_(backbone(model).head.weight)
    torch.nn.init.zeros_(backbone(model).head.bias)
    x1 = torch.randint(V, (N, L), generator=gen(1))
    x, kw = draws(name, fam, x1, torch.full((N,), time, dtype=torch.float64))
    with torch.no_grad():
        logits = model(x, **kw).double().clamp_min(-1e4)                                    # (N, L, V)
    assert torch.isfinite(logits.gather(-1, x1[..., None])).all()

    def ce(scale):
        return -(scale * logits).log_softmax(-1).gather(-1, x1[..., None]).mean().item()

    best = ce(1.0)
    assert best < math.log(V) - 0.2, best                 # informative: well below a blind guess
    for scale in (0.7, 1.4, -1.0):
        assert ce(scale) > best + 0.01, (scale, ce(scale), best)


def test_a_gradient_in_the_state_reaches_the_evidence_term():
    """Steering differentiates delta_{s,t}(x) in x: with a zero network the logits are the
    evidence t x / (1 - s)^2 alone, so the gradient must be that term's (a head computing the
    evidence without gradient gives zero)."""
    cls = FAMILIES.get("flow_map")
    fam = cls(params=cls.Params(), vocab_size=V, seq_len=L)
    model = fam.build_model(BackboneConfig(d_model=16, n_layers=1, n_heads=2))
    torch.nn.init.zeros_(backbone(model).head.weight)
    torch.nn.init.zeros_(backbone(model).head.bias)
    x = torch.randn(3, L, V, dtype=torch.float64, generator=gen(2), requires_grad=True)
    s, t = torch.full((3,), 0.4, dtype=torch.float64), torch.full((3,), 0.8, dtype=torch.float64)
    w = torch.randn(3, L, V, dtype=torch.float64, generator=gen(3))
    (model(x, s=s, t=t).softmax(-1) * w).sum().backward()
    with torch.no_grad():  # the same function of x written out: softmax(s x / (1 - s)^2)
        p = (0.4 * x / 0.6**2).softmax(-1)
        want = 0.4 / 0.6**2 * p * (w - (p * w).sum(-1, keepdim=True))
    assert torch.allclose(x.grad, want, atol=1e-5), (x.grad - want).abs().max()
    assert want.abs().max() > 0.1


@pytest.mark.parametrize("name", list(CASES))
def test_evidence_head_off_builds_the_plain_backbone(name):
    cls = FAMILIES.get(name)
    fam = cls(params=cls.Params(**{**CASES[name][0], "evidence_head": False}), vocab_size=V, seq_len=L)
    assert not isinstance(fam.build_model(BackboneConfig(d_model=16, n_layers=1, n_heads=2)), EvidenceHead)


def test_dirichlet_evidence_head_needs_the_denoiser_head():
    cls = FAMILIES.get("dirichlet_flow")
    with pytest.raises(ValueError, match="need head=.denoiser."):
        cls.Params(evidence_head=True, head="velocity")


# --- self-conditioning ---------------------------------------------------------------------------
@pytest.mark.parametrize("name,params", [("kl_flow", {"evidence_head": False}),
                                         ("dfm", {"source": "uniform", "evidence_head": False}),
                                         ("dirichlet_flow", {"head": "denoiser"})])
def test_self_conditioning_with_a_zero_estimate_is_the_plain_model(name, params):
    cls = FAMILIES.get(name)
    config = BackboneConfig(d_model=16, n_layers=1, n_heads=2)
    fam = cls(params=cls.Params(self_cond=0.5, **params), vocab_size=V, seq_len=L)
    model = fam.build_model(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x1 = torch.randint(V, (32, L), generator=gen(1))
    for step in range(3):  # trained a little, so the self-conditioning map is no longer zero
        loss = fam.loss(model, x1, generator=gen(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert backbone(model).self_cond.weight.abs().sum() > 0
    plain = cls(params=cls.Params(self_cond=0.0, **params), vocab_size=V, seq_len=L).build_model(config)
    missing = plain.load_state_dict(model.state_dict(), strict=False)
    assert [k.rsplit(".", 2)[-2:] for k in missing.unexpected_keys] == [["self_cond", "weight"]]
    assert not missing.missing_keys
    x, kw = draws(name, fam, x1, torch.full((32,), 0.3, dtype=torch.float64))
    with torch.no_grad():
        zero = model(x, **kw, x1_hat=torch.zeros(32, L, V))
        estimate = model(x, **kw, x1_hat=torch.softmax(zero, -1))
        assert torch.equal(zero, plain(x, **kw))
        assert torch.equal(zero, model(x, **kw))
        assert not torch.allclose(estimate, zero)


def test_samplers_feed_the_previous_estimate_back():
    fam = FAMILIES.get("dfm")(params=FAMILIES.get("dfm").Params(source="uniform", self_cond=0.5),
                              vocab_size=V, seq_len=L)
    seen, outputs = [], []

    def net(x, t=None, s=None, x1_hat=None):
        seen.append(x1_hat)
        outputs.append(torch.randn(x.shape[0], L, V, generator=gen(len(seen))))
        return outputs[-1]

    fam.sample(net, n=3, sampler="euler", params=fam.samplers["euler"](nfe=3), generator=gen())
    assert seen[0] is None and len(seen) == 3
    for prev_out, estimate in zip(outputs, seen[1:]):
        assert torch.allclose(estimate, prev_out.softmax(-1))
    seen.clear()
    fam.sample(net, n=3, sampler="euler", params=fam.samplers["euler"](nfe=2), generator=gen())
    assert seen[0] is None  # a new sample() starts from no estimate


def test_self_conditioning_costs_a_third_of_a_pass_more():
    cls = FAMILIES.get("kl_flow")
    plain = cls(params=cls.Params(), vocab_size=V, seq_len=L)
    sc = cls(params=cls.Params(self_cond=0.25), vocab_size=V, seq_len=L)
    assert sc.train_cost == pytest.approx(plain.train_cost + 1 / 3)


# --- the posterior input -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["dirichlet_flow"])
def test_posterior_input_feeds_the_backbone_the_single_position_posterior(name):
    """The backbone reads softmax(evidence) of the model's own call: rows on the simplex whose
    argmax is the clean token where the path has decided it (a negated or missing evidence
    would put the mass elsewhere), and the time the model is called at is the one used."""
    from flowbench.families.base import PosteriorInput

    params, _ = CASES[name]
    cls = FAMILIES.get(name)
    fam = cls(params=cls.Params(posterior_input=True, evidence_head=False, **params), vocab_size=V, seq_len=L)
    model = fam.build_model(BackboneConfig(d_model=16, n_layers=1, n_heads=2))
    assert isinstance(model, PosteriorInput)
    seen = []
    model.net.register_forward_pre_hook(lambda mod, args, kw: seen.append(args[0]), with_kwargs=True)
    x1 = torch.randint(V, (64, L), generator=gen(1))
    for time, decided in ((0.9, True), (0.3, False)):
        x, kw = draws(name, fam, x1, torch.full((64,), time, dtype=torch.float64))
        with torch.no_grad():
            model(x, **kw)
        post = seen[-1]
        assert post.dtype == torch.float32 and torch.allclose(post.sum(-1), torch.ones(64, L))
        want = fam.model_evidence(x, kw["t"], kw.get("s")).softmax(-1).float()
        assert torch.allclose(post, want, atol=1e-6)
        hit = (post.argmax(-1) == x1).double().mean().item()
        assert hit > 0.99 if decided else hit < 0.9, (time, hit)
    plain = cls(params=cls.Params(posterior_input=False, evidence_head=False, **params), vocab_size=V, seq_len=L)
    assert not isinstance(plain.build_model(BackboneConfig(d_model=16, n_layers=1, n_heads=2)), PosteriorInput)


# --- flow_map's two stages -----------------------------------------------------------------------
def test_flow_map_distils_only_after_its_anchor_stage():
    """distill_start f: f of the passes train the anchor alone (one pass a step), the rest the
    anchor plus distillation (8/3 passes a step); the loss switches where those passes end."""
    from flowbench.config import TrainConfig

    cls = FAMILIES.get("flow_map")
    two = cls(params=cls.Params(distill_start=0.5), vocab_size=V, seq_len=L)
    steps = TrainConfig(passes=800, batch_size=4).total_steps(L, cost=two.train_cost)
    assert steps == 400 + 150                                    # 400 passes at 1, 400 at 8/3
    assert two.distill_from == pytest.approx(400 / 550)
    anchor_only = cls(params=cls.Params(distill="none"), vocab_size=V, seq_len=L)
    net = two.build_model(BackboneConfig(d_model=16, n_layers=1, n_heads=2))
    x1 = torch.randint(V, (8, L), generator=gen(1))
    with torch.no_grad():
        before = two.loss(net, x1, generator=gen(2))
        two.train_progress = 0.8
        after = two.loss(net, x1, generator=gen(2))
        anchor = anchor_only.loss(net, x1, generator=gen(2))
    assert torch.equal(before, anchor) and after > anchor + 1e-3
