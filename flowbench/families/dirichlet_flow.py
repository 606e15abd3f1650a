"""Dirichlet flow matching on the probability simplex (seed: 000_*.txt, with
the variational view of 002_*.txt). Measured behaviour, recipe ablations and failure modes:
docs/families.md.

Every position carries a point of the simplex S_{V-1}; the sequence state is Pi (L, V). With z the
one-hot data and t = 0 noise, t = 1 data (the seed's convention, and flowbench's):

    Pi_0 ~ prod_i Dirichlet(alpha 1_V),        Pi_t = (1 - t) Pi_0 + t z,
    d Pi_t / dt = z - Pi_0 = (z - Pi_t) / (1 - t).

Heads (`head`), the network reading Pi_t through the backbone's linear simplex embedding, or each
position's single-site posterior softmax(evidence) with `posterior_input` (base.PosteriorInput):
    velocity   seed, Algorithm 1: the output is the velocity,
               L = E || u_theta(Pi_t, t) - (z - Pi_0) ||^2   (summed over V, averaged over positions).
    denoiser   seed 002 (default): mu_theta = softmax(output) ~ E[z | Pi_t], trained by cross-entropy
               -log mu_theta(x_1 | Pi_t); velocity v = (mu_theta - Pi_t) / (1 - t).

Prior in log space: Dirichlet(1/V) coordinates are ~exp(-V Exp(1)), far below float32, so
log G_v = log Gamma(alpha + 1) + log(U_v) / alpha and log Pi_0 = log_softmax(log G); a row's largest
coordinate is >= 1/V, so no row is zero.

alpha (default 16; None = the seed's 1/V). Given token v, Pi_0 = (x - t e_v) / (1 - t) must stay in
the simplex, so only tokens with x^v >= t survive and the Dirichlet density decides among them.
alpha = 1/V identifies the token from t ~ 1e-100 on, below what a float32 network sees; alpha <= 1
makes the exact velocity jump whenever a token drops out; alpha > 1 keeps it continuous and
tightens Pi_0 around 1/V (relative spread 1/sqrt(alpha)). 16 is the smallest alpha on the exact
denoiser's plateau.

Time warp. The token is identified in a narrow band near t ~ 1/V, so uniform t trains almost only
on solved states and a uniform grid steps over the band. Training draws t = F^-1(u), u uniform;
the network is conditioned on u = F(t) (`model(x, t=u)`) so that the sinusoidal time embedding
resolves the band; grid='warp' (default) samples on t_k = F^-1(k / n):
    uniform  F(t) = t                      power  F(t) = t^(1/p), t ~ Beta(1/p, 1)
    logit    logit t ~ Logistic(logit t_mid, s); defaults t_mid = 2.5e-3, s = 0.3: 87% of the
             training times lie in t = 1e-3 .. 5e-3, where context is worth most.
Other grids: uniform k/n, cosine 1 - cos(pi k / 2n), power (k/n)^q.

Sampler `randomized` (seed 004_*.txt, section 2.3; base.randomized_steps), denoiser head only: at
grid time t_k draw z ~ mu_theta(Pi_{t_k}) per position, then Pi_{t_{k+1}} = (1 - t) Pi_0' + t z
with a fresh prior draw Pi_0'; the last call's mu is decoded. NFE = grid steps (grid as `ode`).
A step restarts from a path sample, so the network's error is not carried along the trajectory.

Sampler `ode`: fixed-grid solve of dPi/dt = v(Pi, t) from Pi_0 with flowbench.families.ode; NFE =
backbone calls (rk4 spends 4 per step). `decode` reads the final Pi by argmax or by a float64
categorical draw. `t_end`: euler and midpoint never evaluate at the grid's end, so they run to 1
(the last Euler step lands on mu of the last node); heun and rk4 evaluate at t_end, where the
denoiser's and the oracle's (mu - x)/(1 - t) is undefined, so they need t_end < 1.

Both samplers take `state_precision`: float32 (default; alpha >= 1), whose state, prior and
velocity are float32 and whose prior comes from `dirichlet_draws` (Gamma draws by Marsaglia and
Tsang, vectorized: torch's Gamma sampler costs as much in float32 as in float64); or float64, by
torch's Gamma sampler in log space. With alpha < 1 (its prior coordinates underflow float32) the
default is float64, and float32 set explicitly is an error.

Evidence (oracle mode), v-free terms and the Jacobian (1 - t)^-(V-1) dropped:

    ev[v] = log Dir((x - t e_v)/(1 - t)) + const = (alpha - 1) log(1 - t / x^v)  if x^v >= t, else -inf,

in float64; |x^v - t| within a relative 1e-12 is the face itself. A position that no token can
explain (every x^v < t, an overshooting ODE step) is read at its latest admissible time
t_i = max_v x^v, which keeps its least-violated token.

Recipe defaults (each chosen by measurement, docs/families.md): denoiser head, evidence head,
posterior input, the band-focused logit warp.
"""
from __future__ import annotations

import math
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from flowbench.backbone import BackboneSpec
from flowbench.families.base import (Family, Params, StatePrecision, randomized_steps,
                                     sample_categorical, time_grid)
from flowbench.families.ode import solve, steps_for
from flowbench.families.time_sampling import stratified_uniform
from flowbench.registry import FAMILIES

_TOL = 1e-12  # relative: |x^v - t| below this is the boundary (t survives a u round trip to ~1e-14)


class DirichletFlowParams(Params):
    alpha: float | None = Field(16.0, gt=0)  # Dirichlet concentration; None = 1/V (the seed's value)
    # velocity: regress z - Pi_0 (seed, Algorithm 1); denoiser: cross-entropy on E[z | Pi_t], velocity from it
    head: Literal["velocity", "denoiser"] = "denoiser"
    # training times t = F^-1(u), u uniform; the network reads u = F(t) (module docstring)
    time_warp: Literal["uniform", "power", "logit"] = "logit"
    warp_power: float = Field(3.0, ge=1.0)               # power: t = u^p, i.e. t ~ Beta(1/p, 1)
    # logit: median time, where context is worth most (measured at V = 256, alpha 16: 0.64 / V;
    # the band scales as 1 / V, so set it for another vocabulary); None = 1/V
    warp_center: float | None = Field(0.0025, gt=0, lt=1)
    warp_spread: float = Field(0.3, gt=0)                # logit: scale of the logistic logit(t)
    # the backbone reads each position's single-site posterior softmax(ev) instead of Pi_t
    # (base.PosteriorInput)
    posterior_input: bool = True
    # denoiser head only: logits = network + the position's own evidence (base.EvidenceHead);
    # unset: on for the denoiser head, off for the velocity head
    evidence_head: bool | None = None
    # probability that a training batch row reads the network's own first-pass estimate of x_1
    # (base.Family.self_conditioned; Plaid uses 0.25, CDCD 0.5); samplers always feed it back
    self_cond: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="before")
    @classmethod
    def _evidence_follows_the_head(cls, data):
        if isinstance(data, dict) and data.get("evidence_head") is None:
            data = {**data, "evidence_head": data.get("head", "denoiser") == "denoiser"}
        return data

    @model_validator(mode="after")
    def _evidence_needs_denoiser(self):
        if (self.evidence_head or self.self_cond) and self.head != "denoiser":
            raise ValueError("evidence_head and self_cond read the output as logits: they need head='denoiser'")
        return self


class ODEParams(StatePrecision):
    """state_precision float32 (default; alpha >= 1): state, prior and velocity in float32, the
    prior drawn by dirichlet_draws; float64 by default when alpha < 1 (DirichletFlow.state_dtype)."""

    # fixed-grid ODE solver; nfe counts its stages (rk4 spends 4 calls a step)
    solver: Literal["euler", "midpoint", "heun", "rk4"] = "euler"
    # time grid: warp F^-1(k/n) (the training warp), uniform k/n, cosine 1 - cos(pi k / 2n), power
    grid: Literal["warp", "uniform", "cosine", "power"] = "warp"
    grid_power: float = Field(3.0, ge=1.0)  # power grid t_k = (k / n)^q
    # last grid time; heun and rk4 evaluate there, so they need t_end < 1
    t_end: float = Field(1.0, gt=0.0, le=1.0)
    # the final Pi read by argmax or by a float64 categorical draw
    decode: Literal["argmax", "multinomial"] = "argmax"


class RandomizedParams(StatePrecision):
    """Seed 004's randomized sampler on the Dirichlet path (module docstring); state_precision as
    ODEParams."""

    # time grid, as ODEParams.grid: warp F^-1(k/n) (the training warp), uniform, cosine, power
    grid: Literal["warp", "uniform", "cosine", "power"] = "warp"
    grid_power: float = Field(3.0, ge=1.0)  # power grid t_k = (k / n)^q
    # the last call's mu decoded by a float64 categorical draw or its argmax
    decode: Literal["multinomial", "argmax"] = "multinomial"


def gamma_draws(conc: float, shape: tuple[int, ...], *, generator: torch.Generator,
                dtype=torch.float32) -> torch.Tensor:
    """Gamma(conc) draws (conc >= 1) by Marsaglia and Tsang's method (ACM TOMS 26(3), 2000),
    vectorized over the whole tensor.

    With d = conc - 1/3, c = 1 / sqrt(9 d), x ~ N(0, 1) and v = (1 + c x)^3, d v is accepted when
    log u < x^2 / 2 + d (1 - v + log v) for u ~ U(0, 1) (v <= 0 makes the right side nan or -inf:
    turned down); the entries turned down (0.18% at conc = 16, 5% at conc = 1) are drawn again
    until none is left. One normal and one uniform per entry, against torch's Gamma sampler, which
    draws entry by entry and costs about as much in float32 as in float64."""
    if conc < 1:
        raise ValueError(f"gamma_draws needs conc >= 1, got {conc}")
    device = generator.device
    d = conc - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)

    def attempt(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """k proposals d v and whether each is accepted; in-place arithmetic, one buffer each."""
        x = torch.randn(k, generator=generator, dtype=dtype, device=device)
        u = torch.rand(k, generator=generator, dtype=dtype, device=device)
        v = x.mul(c).add_(1.0).pow_(3)                                   # (1 + c x)^3
        bound = v.log().sub_(v).add_(1.0).mul_(d).addcmul_(x, x, value=0.5)
        return v.mul_(d), torch.lt(u.log_(), bound)

    out, accept = attempt(math.prod(shape))
    todo = (~accept).nonzero().squeeze(-1)
    while todo.numel():
        draw, accept = attempt(todo.numel())
        out[todo[accept]] = draw[accept]
        todo = todo[~accept]
    return out.view(shape)


def dirichlet_draws(shape: tuple[int, ...], *, alpha: float, generator: torch.Generator,
                    dtype=torch.float32) -> torch.Tensor:
    """Dirichlet(alpha 1_V) draws over the last axis of `shape` for alpha >= 1: Gamma(alpha) draws
    (`gamma_draws`) divided by their sum. The float32 samplers' prior; alpha < 1 needs the log
    space of `log_dirichlet`."""
    g = gamma_draws(alpha, shape, generator=generator, dtype=dtype)  # (..., V)
    return g.div_(g.sum(-1, keepdim=True))


def log_dirichlet(shape: tuple[int, ...], *, alpha: float, generator: torch.Generator,
                  dtype=torch.float64) -> torch.Tensor:
    """log of Dirichlet(alpha 1_V) draws over the last axis of `shape`, float64 (or dtype), never
    -inf rows.

    G_v = G'_v U_v^(1/alpha) with G'_v ~ Gamma(alpha + 1), U_v ~ U(0, 1) is Gamma(alpha);
    log Pi = log G - logsumexp(log G)."""
    device = generator.device
    conc = torch.full(shape, alpha + 1.0, dtype=dtype, device=device)
    log_g = torch._standard_gamma(conc, generator=generator).log()
    u = torch.rand(shape, dtype=dtype, generator=generator, device=device)
    log_g = log_g + u.clamp_min(torch.finfo(dtype).tiny).log() / alpha  # (..., V)
    return torch.log_softmax(log_g, dim=-1)


class TimeWarp:
    """t = F^-1(u) for u uniform on [0, 1]; u = F(t) is the network's time input.

    uniform  F(t) = t
    power    F(t) = t^(1/p)                                  (t ~ Beta(1/p, 1))
    logit    F(t) = sigmoid((logit t - logit t_mid) / s)     (logit t ~ Logistic(logit t_mid, s)),
             i.e. t/(1 - t) = (t_mid/(1 - t_mid)) (u/(1 - u))^s. Both directions are products and
             powers of odds, so the round trip keeps float64 relative precision in t (the oracle
             reads t back from u).
    """

    def __init__(self, kind: str, *, power: float = 1.0, center: float = 0.5, spread: float = 1.0):
        self.kind, self.power, self.spread = kind, power, spread
        self.loc = math.log(center / (1 - center))

    def to_t(self, u: torch.Tensor) -> torch.Tensor:
        u = u.double().clamp(0.0, 1.0)
        if self.kind == "power":
            return u**self.power
        if self.kind == "logit":
            return torch.sigmoid(self.loc + self.spread * torch.logit(u))
        return u

    def to_u(self, t: torch.Tensor) -> torch.Tensor:
        t = t.double().clamp(0.0, 1.0)
        if self.kind == "power":
            return t ** (1.0 / self.power)
        if self.kind == "logit":
            return torch.sigmoid((torch.logit(t) - self.loc) / self.spread)
        return t


def grid_warp(kind: str, *, warp: TimeWarp, power: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """u = k/n -> t of a sampler grid (`base.time_grid`'s warp): warp F^-1(u), uniform u,
    cosine 1 - cos(pi u / 2), power u^q."""
    if kind == "warp":
        return warp.to_t
    if kind == "cosine":
        return lambda u: 1.0 - torch.cos(0.5 * math.pi * u)
    if kind == "power":
        return lambda u: u**power
    return lambda u: u


@FAMILIES.register("dirichlet_flow")
class DirichletFlow(Family):
    Params = DirichletFlowParams
    samplers = {"ode": ODEParams, "randomized": RandomizedParams}
    # 2: the prior and path drawn in float32 for training; 3: the training prior by dirichlet_draws,
    # the network's evidence maps in float32 (alpha >= 1)
    version = 3

    def __init__(self, **kw):
        super().__init__(**kw)
        p = self.params
        self.alpha = p.alpha if p.alpha is not None else 1.0 / self.vocab_size
        center = p.warp_center if p.warp_center is not None else 1.0 / self.vocab_size
        self.warp = TimeWarp(p.time_warp, power=p.warp_power, center=center, spread=p.warp_spread)

    def backbone_spec(self) -> BackboneSpec:
        return BackboneSpec(cond="t", input="simplex", self_cond=self.self_cond_rate > 0)

    # --- path and training ---------------------------------------------------------------------
    def prior(self, shape: tuple[int, ...], *, generator: torch.Generator, dtype=torch.float64,
              vectorized: bool = False) -> torch.Tensor:
        """Pi_0 ~ Dirichlet(alpha 1_V) per position: (..., V) float64 (or dtype), drawn in log space
        by torch's Gamma sampler, or (vectorized, alpha >= 1) by `dirichlet_draws`."""
        if vectorized:
            return dirichlet_draws((*shape, self.vocab_size), alpha=self.alpha, generator=generator, dtype=dtype)
        return log_dirichlet((*shape, self.vocab_size), alpha=self.alpha, generator=generator, dtype=dtype).exp()

    def path(self, pi0: torch.Tensor, x1: torch.Tensor, *, t: torch.Tensor) -> torch.Tensor:
        """Pi_t = (1 - t) Pi_0 + t z: pi0 (B, L, V), ids x1 (B, L), t (B,) -> (B, L, V) in pi0's dtype.

        t added at the data token in place of a one-hot times t (the same sums, one buffer)."""
        t = t.to(pi0.dtype)[:, None, None]                                          # (B, 1, 1)
        return ((1 - t) * pi0).scatter_add_(-1, x1[..., None], t.expand(*x1.shape, 1))

    def velocity_target(self, pi0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """d Pi_t / dt = z - Pi_0 (seed, Algorithm 1): (B, L, V) in pi0's dtype."""
        return F.one_hot(x1, self.vocab_size).to(pi0.dtype) - pi0

    def loss(self, model, x1, *, generator=None):
        """velocity: ||u_theta(Pi_t, u) - (z - Pi_0)||^2 summed over V; denoiser: -log mu_theta(x_1).
        Averaged over positions; t = F^-1(u) with u stratified over the batch."""
        if generator is None:
            generator = torch.Generator(device=x1.device).manual_seed(int(torch.randint(2**31, ())))
        B, L = x1.shape
        u = stratified_uniform(B, generator=generator, device=x1.device)                  # (B,)
        # the path in float32, the network's input precision (t itself stays float64); for
        # alpha >= 1 the prior by dirichlet_draws, as the float32 samplers draw it (torch's Gamma
        # sampler draws entry by entry: a quarter of a step)
        pi0 = self.prior((B, L), generator=generator, dtype=torch.float32,
                         vectorized=self.alpha >= 1)                                   # (B, L, V)
        t = self.warp.to_t(u)
        x_t = self.path(pi0, x1, t=t)                                                 # (B, L, V)
        # alpha < 1: a true token whose float32 prior coordinate underflows to 0 sits exactly on
        # the evidence's boundary x = t, and a float32 time, off by up to 6e-4 relative through
        # the warp, can put it outside the support (evidence -inf, an infinite loss: beta_sweep's
        # alpha = 1/V at step 181), so the evidence reads the path's own float64 time. The
        # network sees float32 either way; alpha >= 1 keeps the float32 time its trained models had.
        t_in = u if self.alpha < 1 else u.float()
        out = self.self_conditioned(model, x_t.float(), generator=generator, t=t_in).float()  # (B, L, V)
        if self.params.head == "velocity":
            return ((out - self.velocity_target(pi0, x1).float()) ** 2).sum(-1).mean()
        return F.cross_entropy(out.transpose(1, 2), x1)

    def training_floor_work(self, *, phase, x1, generator):
        """What a training step cannot skip besides its backbone pass (the cross-entropy is the bare
        step's): the prior draw (as `loss` draws it), the path, and what the network reads of it:
        the evidence (`model_evidence`, float32 for alpha >= 1) with the posterior input's softmax.
        The velocity head adds its target z - Pi_0. Left out: the time draw (B numbers), the
        evidence head's per-position shift, dtype casts."""
        B, L = x1.shape
        u = torch.rand(B, generator=generator, device=x1.device, dtype=torch.float64)
        t, t_in = self.warp.to_t(u), (u if self.alpha < 1 else u.float())

        def work() -> torch.Tensor:
            pi0 = self.prior((B, L), generator=generator, dtype=torch.float32, vectorized=self.alpha >= 1)
            x_t = self.path(pi0, x1, t=t)                                             # (B, L, V)
            if self.params.head == "velocity":
                self.velocity_target(pi0, x1)
            if not (self.params.posterior_input or self.params.evidence_head):
                return x_t
            ev = self.model_evidence(x_t, t_in, None)                                 # (B, L, V)
            return ev.softmax(-1) if self.params.posterior_input else ev

        return work

    # --- sampling ----------------------------------------------------------------------------
    def state_dtype(self, params) -> torch.dtype:
        """The sampler's state dtype: its state_precision, but float64 by default when alpha < 1."""
        if self.alpha < 1 and "state_precision" not in params.model_fields_set:
            return torch.float64
        return getattr(torch, params.state_precision)

    def check_sampler(self, sampler, params):
        if self.state_dtype(params) == torch.float32 and self.alpha < 1:
            raise ValueError(f"state_precision float32 needs alpha >= 1: Dirichlet({self.alpha:.3g}) "
                             f"prior coordinates underflow float32 (module docstring)")
        if sampler == "randomized":
            if self.params.head != "denoiser":
                raise ValueError("sampler 'randomized' draws x_1 from the denoiser: it needs head='denoiser'")
            return
        steps_for(params.nfe, params.solver)
        if params.t_end >= 1.0 and params.solver in ("heun", "rk4"):
            raise ValueError(f"solver {params.solver!r} evaluates the velocity at t = 1, where "
                             f"(mu - x)/(1 - t) is undefined: set t_end < 1")

    def velocity(self, model, x: torch.Tensor, *, t: torch.Tensor) -> torch.Tensor:
        """dx/dt at the state x (n, L, V; float64, or float32) and the scalar time t, one backbone
        call; in x's dtype."""
        n = x.shape[0]
        t = t.double().expand(n).to(x.device)                                         # (n,)
        out = model(x, t=self.warp.to_u(t)).to(x.dtype)                              # (n, L, V)
        if self.params.head == "velocity":
            return out
        mu = torch.softmax(out, dim=-1)
        return (mu - x) / (1.0 - t).to(x.dtype)[:, None, None]

    @torch.no_grad()
    def sample(self, model, *, n, sampler, params, generator):
        self.check_sampler(sampler, params)
        device = generator.device
        model = self.sampling_model(model)
        dtype = self.state_dtype(params)

        def prior() -> torch.Tensor:
            # float32: torch's Gamma sampler costs as much as in float64, so the prior comes from
            # dirichlet_draws (the same law, other random numbers)
            return self.prior((n, self.seq_len), generator=generator, dtype=dtype,
                              vectorized=dtype == torch.float32)                  # (n, L, V)

        x0 = prior()
        if sampler == "randomized":
            grid = time_grid(params.nfe, warp=grid_warp(params.grid, warp=self.warp, power=params.grid_power),
                             t_end=1.0).to(device)
            _, logits = randomized_steps(
                lambda x, t: model(x.float(), t=self.warp.to_u(t).expand(n).float()),
                lambda x1, t: self.path(prior(), x1, t=t.expand(n)),
                x0, grid, generator=generator)
            log_p = logits.to(torch.promote_types(logits.dtype, dtype)).log_softmax(-1)
        else:
            grid = time_grid(steps_for(params.nfe, params.solver), t_end=params.t_end,
                             warp=grid_warp(params.grid, warp=self.warp, power=params.grid_power)).to(device)
            x = solve(lambda t, x: self.velocity(model, x, t=t), x0, grid, solver=params.solver)
            log_p = x.clamp_min(0.0).log()
        if params.decode == "argmax":
            return log_p.argmax(-1)
        return sample_categorical(log_p, generator=generator, temperature=params.temperature,
                                  top_p=params.top_p)

    # --- oracle ------------------------------------------------------------------------------
    def model_evidence(self, x, t, s):
        """The evidence at the model's time input u = F(t); a float32 input rounds x^v = t by
        about 1e-7 relative, so the boundary tolerance follows the input's precision, and a
        float32 input is read in float32 for alpha >= 1 (where the density has no pole at the
        boundary); alpha < 1 keeps float64 (module docstring on its float32 prior coordinates)."""
        if x.dtype == torch.float64:
            return self.evidence(x, self.warp.to_t(t), tol=_TOL)
        return self.evidence(x, self.warp.to_t(t), tol=1e-5,
                             dtype=torch.float32 if self.alpha >= 1 else torch.float64)

    def evidence(self, x_t, t, *, tol: float = _TOL, dtype: torch.dtype = torch.float64):
        """ev[b, i, v] = (alpha - 1) log(1 - t / x^v) if x^v >= t else -inf, float64 (or dtype)
        (B, L, V).

        t: (B,) path times. Rounding: |x^v - t| <= tol counts as the boundary, where the
        gap x^v - t is taken as tol (the density diverges there when alpha < 1). A position
        with every x^v < t - tol is read at its own time t_i = max_v x^v."""
        x = x_t.to(dtype).clamp_min(0.0)                                      # (B, L, V)
        t = t.to(dtype).reshape(-1, 1, 1).to(x.device)
        t = torch.minimum(t, x.amax(-1, keepdim=True))                       # (B, L, 1) admissible time
        tol = torch.maximum(x, t).mul_(tol)
        gap = x - t                                                          # (B, L, V)
        out = gap < -tol                                                     # x^v < t: impossible
        ev = torch.maximum(gap, tol).div_(x).log_().mul_(self.alpha - 1.0)   # x = 0 gives inf: masked
        ev.masked_fill_((t == 0).expand_as(ev), 0.0)                         # x_0 says nothing about v
        return ev.masked_fill_(out, -math.inf)

    def oracle_model(self, posterior):
        """The exact posterior in the network's output convention: log mu for the denoiser head,
        (mu - x) / (1 - t) for the velocity head; the model time u = F(t) is mapped back to t."""

        def model(x, t=None, s=None, x1_hat=None):  # the exact posterior needs no estimate of x_1
            tt = self.warp.to_t(t)                                           # (B,)
            log_mu = posterior(self.evidence(x, tt))                         # (B, L, V)
            if self.params.head == "denoiser":
                return log_mu
            return (log_mu.exp() - x.double()) / (1.0 - tt)[:, None, None]

        return model
