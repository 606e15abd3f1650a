"""Dirichlet flow matching on the probability simplex (seed: /work/shared/seeds/000_*.txt).

Every position carries a point of the simplex S_{V-1}; the sequence state is Pi (L, V).

Prior and path (seed, section 2), with z the one-hot data and t = 0 noise, t = 1 data:

    Pi_0 ~ prod_i Dirichlet(alpha 1_V),        Pi_t = (1 - t) Pi_0 + t z,
    d Pi_t / dt = z - Pi_0 = (z - Pi_t) / (1 - t).

Losses (`head`):
    velocity   the seed's Algorithm 1: the network output is the velocity u_theta(Pi_t, t) (B, L, V),
               L = E || u_theta(Pi_t, t) - (z - Pi_0) ||^2   (summed over V, averaged over positions).
    denoiser   the variational view (seed 002): mu_theta = softmax(network output) is the posterior
               mean E[z | Pi_t], trained by cross-entropy -log mu_theta(x_1 | Pi_t); its velocity is
               v = (mu_theta - Pi_t) / (1 - t).

Prior draws are made in log space: Dirichlet(1/V) coordinates fall far below the float32 range
(typical log-values are -V * Exp(1)), so log G_v = log Gamma(alpha + 1) + log(U_v) / alpha and
log Pi_0 = log_softmax(log G). The largest coordinate of a row is at least 1/V, so no row is zero.

Time warp. The data token is identified very early: a coordinate reaches t only if it is the data
token or its prior mass is above t, and Dirichlet coordinates are of order 1/V (alpha = 1) or far
smaller (alpha = 1/V). Uniform t therefore trains almost only on solved states. `time_warp='power'`
draws t = u^p with u uniform, i.e. t ~ Beta(1/p, 1), putting mass on small t; the network is
conditioned on the same quantile u = t^(1/p) (`model(x, t=u)`), so the sinusoidal time embedding
resolves the informative band. Sampling grids (`grid`): uniform t_k = k/n, cosine
t_k = 1 - cos(pi k / 2n), power t_k = (k/n)^q.

Evidence (oracle mode). Given the clean token v, Pi_0 = (x - t e_v) / (1 - t) must lie in the
simplex, i.e. x^v >= t; the Dirichlet log-density of that point, with the v-free terms and the
Jacobian (1 - t)^-(V-1) dropped, is

    ev[v] = (alpha - 1) log(1 - t / x^v)   if x^v >= t,   -inf otherwise.

It is computed in float64 with a rounding tolerance at the boundary x^v = t. A state that no
token can explain (every x^v < t: an ODE step overshot) is read at its own latest admissible
time t_i = max_v x^v, so the least-violated token survives.

Defaults and measurements: see the `DirichletFlowParams` field comments.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from flowbench.families.base import BackboneSpec, Family, Params, SamplerParams, sample_categorical
from flowbench.families.ode import STAGES, solve, steps_for
from flowbench.registry import FAMILIES

_TOL = 1e-12  # relative: |x^v - t| below this is the boundary (t survives a u round trip to ~1e-14)


class DirichletFlowParams(Params):
    alpha: float | None = Field(None, gt=0)  # Dirichlet concentration; None = 1/V (the seed's value)
    head: Literal["velocity", "denoiser"] = "velocity"
    input: Literal["probs", "likelihood"] = "probs"
    skip: bool = False  # denoiser logits = ev(x_t, t) + network output
    time_warp: Literal["uniform", "power", "logit"] = "logit"
    warp_power: float = Field(3.0, ge=1.0)               # power: t = u^p, i.e. t ~ Beta(1/p, 1)
    warp_center: float | None = Field(None, gt=0, lt=1)  # logit: median time; None = 1/V
    warp_spread: float = Field(1.0, gt=0)                # logit: scale of the logistic logit(t)


    @model_validator(mode="after")
    def _likelihood_input_needs_denoiser(self):
        if (self.input == "likelihood" or self.skip) and self.head != "denoiser":
            raise ValueError("input='likelihood' and skip=True need head='denoiser' (a velocity "
                             "oracle needs x_t itself)")
        return self


class ODEParams(SamplerParams):
    solver: Literal["euler", "midpoint", "heun", "rk4"] = "euler"
    grid: Literal["warp", "uniform", "cosine", "power"] = "warp"
    grid_power: float = Field(3.0, ge=1.0)  # power grid t_k = (k / n)^q
    t_end: float = Field(1.0, gt=0.0, le=1.0)
    decode: Literal["argmax", "multinomial"] = "argmax"


def log_dirichlet(shape: tuple[int, ...], *, alpha: float, generator: torch.Generator) -> torch.Tensor:
    """log of Dirichlet(alpha 1_V) draws over the last axis of `shape`, float64, never -inf rows.

    G_v = G'_v U_v^(1/alpha) with G'_v ~ Gamma(alpha + 1), U_v ~ U(0, 1) is Gamma(alpha);
    log Pi = log G - logsumexp(log G)."""
    device = generator.device
    conc = torch.full(shape, alpha + 1.0, dtype=torch.float64, device=device)
    log_g = torch._standard_gamma(conc, generator=generator).log()
    u = torch.rand(shape, dtype=torch.float64, generator=generator, device=device)
    log_g = log_g + u.clamp_min(1e-300).log() / alpha  # (..., V)
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


def time_grid(n: int, *, kind: str, warp: TimeWarp, power: float, t_end: float) -> torch.Tensor:
    """n + 1 float64 times from 0 to t_end: warp F^-1(k/n), uniform k/n, cosine
    1 - cos(pi k / 2n), power (k/n)^q."""
    u = torch.linspace(0.0, 1.0, n + 1, dtype=torch.float64)
    if kind == "warp":
        t = warp.to_t(u)
    elif kind == "cosine":
        t = 1.0 - torch.cos(0.5 * math.pi * u)
    elif kind == "power":
        t = u**power
    else:
        t = u
    t[0], t[-1] = 0.0, 1.0
    return t * t_end


@FAMILIES.register("dirichlet_flow")
class DirichletFlow(Family):
    Params = DirichletFlowParams
    samplers = {"ode": ODEParams}

    def __init__(self, **kw):
        super().__init__(**kw)
        p = self.params
        self.alpha = p.alpha if p.alpha is not None else 1.0 / self.vocab_size
        center = p.warp_center if p.warp_center is not None else 1.0 / self.vocab_size
        self.warp = TimeWarp(p.time_warp, power=p.warp_power, center=center, spread=p.warp_spread)

    def backbone_spec(self) -> BackboneSpec:
        return BackboneSpec(cond="t", input="simplex")

    # --- path and training ---------------------------------------------------------------------
    def prior(self, shape: tuple[int, ...], *, generator: torch.Generator) -> torch.Tensor:
        """Pi_0 ~ Dirichlet(alpha 1_V) per position: (..., V) float64, drawn in log space."""
        return log_dirichlet((*shape, self.vocab_size), alpha=self.alpha, generator=generator).exp()

    def path(self, pi0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Pi_t = (1 - t) Pi_0 + t z: pi0 (B, L, V), ids x1 (B, L), t (B,) -> (B, L, V) float64."""
        t = t.double()[:, None, None]
        return (1 - t) * pi0 + t * F.one_hot(x1, self.vocab_size).double()

    def inputs(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The network's input at state x (B, L, V), path time t (B,), and the evidence when the
        family uses it: x itself ('probs') or the per-position likelihood normalised over v,
        softmax_v ev[v] ('likelihood'). float64."""
        ev = self.evidence(x, t) if self.params.input == "likelihood" or self.params.skip else None
        return (x if self.params.input == "probs" else torch.softmax(ev, dim=-1)), ev

    def logits(self, out: torch.Tensor, ev: torch.Tensor | None) -> torch.Tensor:
        """Denoiser logits from the network output (B, L, V): out, or ev + out with skip."""
        return out + ev.to(out.dtype) if self.params.skip else out

    def velocity_target(self, pi0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """d Pi_t / dt = z - Pi_0 (seed, Algorithm 1): (B, L, V) float64."""
        return F.one_hot(x1, self.vocab_size).double() - pi0

    def loss(self, model, x1, *, generator=None):
        """velocity: ||u_theta(Pi_t, u) - (z - Pi_0)||^2 summed over V; denoiser: -log mu_theta(x_1).
        Averaged over positions; t = F^-1(u) with u stratified over the batch."""
        if generator is None:
            generator = torch.Generator(device=x1.device).manual_seed(int(torch.randint(2**31, ())))
        B, L = x1.shape
        u0 = torch.rand((), generator=generator, device=x1.device, dtype=torch.float64)
        u = (u0 + torch.arange(B, device=x1.device, dtype=torch.float64) / B) % 1.0  # (B,)
        pi0 = self.prior((B, L), generator=generator)                                 # (B, L, V)
        t = self.warp.to_t(u)
        x_t = self.path(pi0, x1, t)                                                   # (B, L, V)
        inp, ev = self.inputs(x_t, t)
        out = model(inp.float(), t=u.float()).float()                                 # (B, L, V)
        if self.params.head == "velocity":
            return ((out - self.velocity_target(pi0, x1).float()) ** 2).sum(-1).mean()
        return F.cross_entropy(self.logits(out, ev).transpose(1, 2), x1)

    # --- sampling ----------------------------------------------------------------------------
    def check_sampler(self, sampler, params):
        steps_for(params.nfe, params.solver)
        if params.t_end >= 1.0 and params.solver in ("heun", "rk4"):
            raise ValueError(f"solver {params.solver!r} evaluates the velocity at t = 1, where "
                             f"(mu - x)/(1 - t) is undefined: set t_end < 1")

    def velocity(self, model, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """dx/dt at the float64 state x (n, L, V) and the scalar time t, one backbone call."""
        n = x.shape[0]
        t = t.double().expand(n).to(x.device)                                         # (n,)
        inp, ev = self.inputs(x, t)
        out = model(inp, t=self.warp.to_u(t)).double()                                # (n, L, V)
        if self.params.head == "velocity":
            return out
        mu = torch.softmax(self.logits(out, ev), dim=-1)
        return (mu - x) / (1.0 - t)[:, None, None]

    @torch.no_grad()
    def sample(self, model, *, n, sampler, params, generator):
        self.check_sampler(sampler, params)
        device = generator.device
        x0 = self.prior((n, self.seq_len), generator=generator)                      # (n, L, V)
        grid = time_grid(steps_for(params.nfe, params.solver), kind=params.grid, warp=self.warp,
                         power=params.grid_power, t_end=params.t_end).to(device)
        x = solve(lambda t, x: self.velocity(model, x, t), x0, grid, solver=params.solver)
        if params.decode == "argmax":
            return x.argmax(-1)
        p = x.clamp_min(0.0)
        return sample_categorical(p.log(), generator=generator)

    # --- oracle ------------------------------------------------------------------------------
    def evidence(self, x_t, t):
        """ev[b, i, v] = (alpha - 1) log(1 - t / x^v) if x^v >= t else -inf, float64 (B, L, V).

        t: (B,) path times. Rounding: |x^v - t| <= tol counts as the boundary, where the
        gap x^v - t is taken as tol (the density diverges there when alpha < 1). A position
        with every x^v < t - tol is read at its own time t_i = max_v x^v."""
        x = x_t.double().clamp_min(0.0)                                       # (B, L, V)
        t = t.double().reshape(-1, 1, 1).to(x.device)
        t = torch.minimum(t, x.amax(-1, keepdim=True))                       # (B, L, 1) admissible time
        tol = torch.maximum(x, t).mul_(_TOL)
        gap = x - t                                                          # (B, L, V)
        out = gap < -tol                                                     # x^v < t: impossible
        ev = torch.maximum(gap, tol).div_(x).log_().mul_(self.alpha - 1.0)   # x = 0 gives inf: masked
        ev.masked_fill_((t == 0).expand_as(ev), 0.0)                         # x_0 says nothing about v
        return ev.masked_fill_(out, -math.inf)

    def oracle_model(self, posterior):
        """The exact posterior in the network's input and output conventions: the model time
        u = F(t), and with input='likelihood' the input is the normalised likelihood itself."""

        def model(x, t=None, s=None):
            tt = self.warp.to_t(t)                                           # (B,)
            ev = x.double().log() if self.params.input == "likelihood" else self.evidence(x, tt)
            log_mu = posterior(ev)                                           # (B, L, V)
            if self.params.skip:  # the sampler adds ev (ev - log x is constant per position)
                return torch.where(torch.isfinite(ev), log_mu - ev, torch.zeros_like(ev))
            if self.params.head == "denoiser":
                return log_mu
            return (log_mu.exp() - x.double()) / (1.0 - tt)[:, None, None]

        return model
