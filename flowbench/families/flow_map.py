"""Categorical flow map: a two-time mean denoiser on the simplex, trained by self-distillation.

Seeds: 002_*.txt (variational flow matching, categorical flow maps) and
003_*.txt (flow maps, mean denoiser, semigroup condition). Time: t = 0 noise, t = 1 data.
Measured behaviour, recipe ablations and failure modes: docs/families.md.

Path. Each token is a one-hot e_v in R^V; noise is Gaussian in that space, per position:

    I_t = (1 - t) x_0 + t x_1,    x_0 ~ N(0, I_V),  x_1 = e_{x_1}.

Denoiser D_t(x) = E[x_1 | I_t = x] (per position, on the simplex) and velocity
b_t(x) = (D_t(x) - x) / (1 - t). The network reads (x_s, s, t) and returns logits whose softmax is
the mean denoiser delta_{s,t}(x) (003, "Flow maps for language"), with delta_{t,t} = D_t; the flow
map is

    X_{s,t}(x) = ((1 - t)/(1 - s)) x + ((t - s)/(1 - s)) delta_{s,t}(x),

so X_{s,s} = x, X_{s,1} = delta_{s,1} and a simplex point stays on the simplex. The backbone reads
x_s itself, or softmax(kappa_s x_s) with `precondition: softmax` (SoftmaxInput, the default: the
raw input's noise is about sqrt(V) times the signal's norm).

Loss = anchor + `distill_weight` * distillation, everything per token (mean over batch and L);
the anchor trains alone for the first `distill_start` of the passes (FLM's two stages,
arXiv 2602.16813):

  anchor  cross-entropy of delta_{t,t}(I_t) against x_1 (003 L_anchor; 002 VFM), t stratified
          uniform over the batch (t = (u + b/B) mod 1).
  psd     semigroup (003 L_PSD): X_{s,t} = X_{u,t} o X_{s,u} holds iff

              delta_{s,t}(x) = gamma delta_{s,u}(x) + (1 - gamma) delta_{u,t}(X_{s,u}(x)),
              gamma = (1 - t)(u - s) / ((1 - u)(t - s)),

          so delta_{s,t}(I_s) is fitted by cross-entropy to that stop-gradient target. The loss is
          reported as KL(target || delta_{s,t}) (same gradient; zero at the exact flow map).
          Times: (s, t) = sorted pair of uniforms, t set to 1 with probability `end_prob` (the
          map every sampler ends with), u = s + w (t - s), w ~ U[0, 1); 1 - u is clamped at
          1e-12 (u < t <= 1 except for rounding) and gamma = 0 when t = s.
  lsd     Lagrangian (002 L_distill): w(t) || d/dt X_{s,t}(I_s) - sg[b_t(X_{s,t}(I_s))] ||^2
          summed over the V coordinates; d/dt by forward-mode AD (torch.func.jvp, attention on the
          math backend which supports it). Times: sorted pair of uniforms scaled into [0, 1 - eps]
          (b_t diverges at t = 1). Weight (`lsd_weight`): 'velocity' w = 1 is the seed's loss (its
          1/(1 - t)^2 scale swamps the anchor); 'denoiser' w = (1 - t)^2 measures the residual in
          simplex units, (1 - t) d/dt X - sg[delta_{t,t}(X) - X], with the same minimiser.
  none    anchor only (a plain VFM flow; the flow_map sampler is then not distilled).

Samplers:
  flow_map  k = nfe jumps on t_j = 1 - (1 - j/k)^grid_power (uniform for grid_power = 1),
            x <- X_{t_j, t_{j+1}}(x) from x_0 ~ N(0, I); the last jump lands on delta_{t_{k-1},1},
            decoded by argmax or a float64 categorical draw (`decode`). x_0 and the state are
            float32 (the network's input precision), updated in place.
  randomized  seed 004's randomized sampler (base.randomized_steps) on the anchor: at t_k draw
            x_1 ~ delta_{t_k,t_k}(x) per position, then x <- I_{t_{k+1}} with fresh noise x_0; the
            last call's delta is decoded (`decode`, default a draw). nfe calls on a uniform grid
            to `t_end`. No error of one step rides along the trajectory, as it does in the euler
            flow of the same anchor (and in the map distilled from that flow).
  consistency  multistep consistency sampling (Song et al., arXiv 2303.01469, Algorithm 1) with
            the map to the data end: at grid time t_j read the endpoint x_1 = argmax
            delta_{t_j,1}(x) (`read`: or a draw, nucleus-filtered by `read_top_p`), then
            x <- I_{t_{j+1}} = (1 - t_{j+1}) x_0' + t_{j+1} e_{x_1} with fresh noise x_0'; the last
            endpoint is decoded (`decode`). Grid: t_0 = 0, then k - 1 times evenly from `t_first`
            to `t_last` (k = nfe; k = 2: t_first only). With the exact map every grid samples the
            data (X_{0,1}(x_0) already does, and a re-noised sample is a path sample); with a
            trained one each restart re-reads the map from a fresh path state.
  euler     the diagonal flow dx/dt = b_t(x) solved by `solver` on a uniform grid to `t_end`,
            nfe velocity calls (flowbench.families.ode); read-out: argmax of the final state.
            heun and rk4 evaluate b at t_end, so they need t_end < 1.
  Every sampler takes `input_precision`: the network's softmax input and evidence head run in
  float32 (default, as in training) or float64 for the sampler's calls.

Oracle. evidence(x, t)[v] = log N(x; t e_v, (1 - t)^2 I) = t x_v / (1 - t)^2 + const(x, t), and
D_t = exp(corpus.posterior(evidence)). For s < t the oracle integrates the diagonal flow from s
to t inside one call (one counted NFE), n = ceil((t - s) * steps_per_unit) exponential midpoint
steps in float64. With J_{r,h}(X, d) = ((1 - r - h)/(1 - r)) X + (h/(1 - r)) d, the exact
solution over [r, r + h] when the denoiser is frozen at d, a step is

    X_mid = J_{r,h/2}(X, D_r(X)),    X <- J_{r,h}(X, D_{r+h/2}(X_mid)),

a convex combination, so delta stays on the simplex. The oracle returns
log delta_{s,t} = log(((1 - s) X_{s,t}(x) - (1 - t) x)/(t - s)), clamped at the smallest float64
(for s = t: log D_s(x)). Composition is exact on nested grids, so the oracle obeys the semigroup
identity to rounding when (u - s) and (t - u) are multiples of 1/steps_per_unit.

Recipe defaults (each chosen by measurement, docs/families.md): `evidence_head` on (logits =
network + t x_s / (1 - s)^2 at the state's time s, so delta_{s,s} with a zero network is the
single-position posterior), `precondition: softmax`, `distill_start: 0.5`, uniform anchor times,
`end_prob` 0.25.
"""
from __future__ import annotations

import math
from contextvars import ContextVar
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from flowbench.config import BackboneConfig
from flowbench.backbone import BackboneSpec
from flowbench.families.base import (Family, Params, SamplerParams, TrainingPhase,
                                     randomized_steps, sample_categorical, time_grid)
from flowbench.families.ode import Solver, solve, steps_for
from flowbench.families.time_sampling import TimeSampling
from flowbench.registry import FAMILIES

_TINY = torch.finfo(torch.float64).tiny
# the dtype of the network's own input maps (softmax input, evidence head): float32 in training
# (float64 before version 3: a sixth of a step, for the same validation loss: docs/performance.md);
# a sampler sets its own for its calls (its `input_precision`), read where the maps compute
_INPUT_DTYPE: ContextVar[torch.dtype] = ContextVar("flow_map_input_dtype", default=torch.float32)


class FlowMapParams(Params):
    """distill: psd (semigroup, default: cross-entropy native, no jvp) | lsd | none.
    distill_weight: weight of the distillation term next to the anchor (1: equal footing).
    end_prob: psd probability of t = 1, the jump every sampler ends with.
    lsd_weight: denoiser ((1 - t)^2 times the seed's residual: O(1) like the anchor, default) or
        velocity (the seed's unweighted residual, up to 1/eps^2 near t = 1).
    eps: lsd times t <= 1 - eps, where 1/(1 - t) stays below 1/eps.
    precondition: softmax (the backbone reads softmax(kappa_s x_s), SoftmaxInput; default) or
        none (it reads x_s, as in the seeds; the anchor then learns no context: module docstring).
    distill_start: the fraction of the passes that train the anchor alone (FLM's first stage)."""

    distill: Literal["psd", "lsd", "none"] = "psd"
    distill_weight: float = Field(1.0, ge=0.0)
    # fraction of the training budget (in passes) spent on the anchor alone before the
    # distillation term switches on: FLM's two stages (flow first, then the map), arXiv 2602.16813
    distill_start: float = Field(0.5, ge=0.0, lt=1.0)
    end_prob: float = Field(0.25, ge=0.0, le=1.0)
    lsd_weight: Literal["denoiser", "velocity"] = "denoiser"
    eps: float = Field(0.02, gt=0.0, lt=1.0)
    precondition: Literal["none", "softmax"] = "softmax"
    # logits = network + the evidence of x_s about each token, t x_s / (1 - s)^2 (base.EvidenceHead)
    evidence_head: bool = True
    time: TimeSampling = TimeSampling()  # anchor times t (delta_{t,t})


class _InputPrecision(SamplerParams):
    """input_precision: the dtype of the network's own input maps while sampling, the softmax input
    and the evidence head on (B, L, V): float32 (default, as they train; the conventions' rule,
    float64 only for the final draw) or float64: about a tenth of a forward more at batch 256,
    logits within about 1e-6 (docs/performance.md)."""

    input_precision: Literal["float32", "float64"] = "float32"
    keyed_when_set: ClassVar[tuple[str, ...]] = ("input_precision",)


class FlowMapSamplerParams(_InputPrecision):
    """decode: argmax or sample of the last mean denoiser. grid_power: t_j = 1 - (1 - j/k)^p
    (p > 1 packs the jumps towards the data end)."""

    decode: Literal["argmax", "sample"] = "argmax"
    grid_power: float = Field(1.0, gt=0.0)


class EulerSamplerParams(_InputPrecision):
    """solver: fixed-grid ODE solver (nfe a multiple of its stages). t_end: last grid time."""

    final_draw: ClassVar[bool] = False  # ends in an argmax of the solved state
    solver: Solver = "euler"
    t_end: float = Field(1.0, gt=0.0, le=1.0)


class RandomizedSamplerParams(_InputPrecision):
    """decode: the last denoiser's output drawn from (default) or its argmax. t_end: last grid time."""

    decode: Literal["sample", "argmax"] = "sample"
    t_end: float = Field(1.0, gt=0.0, le=1.0)


class ConsistencySamplerParams(_InputPrecision):
    """Multistep consistency sampling (module docstring): t_0 = 0, then nfe - 1 times evenly from
    t_first to t_last. read: the intermediate endpoints taken as the argmax of delta_{t_j,1}
    (default) or drawn from it (from its nucleus of mass read_top_p); decode: the last endpoint's
    argmax (default) or a draw."""

    # the first re-noised grid time (the only one at nfe = 2)
    t_first: float = Field(0.6, gt=0.0, lt=1.0)
    # the last grid time; t_first..t_last hold nfe - 1 evenly spaced times
    t_last: float = Field(0.8, gt=0.0, lt=1.0)
    # each intermediate endpoint: argmax of delta_{t_j,1} or a draw from it
    read: Literal["argmax", "sample"] = "argmax"
    # read = sample: draw from the nucleus of mass read_top_p (arXiv 1904.09751); between the
    # argmax read (top_p -> 0) and a full draw (1) it trades gen PPL for entropy
    read_top_p: float = Field(1.0, gt=0.0, le=1.0)
    # the last endpoint: its argmax or a draw from it
    decode: Literal["argmax", "sample"] = "argmax"

    @model_validator(mode="after")
    def _ordered(self):
        if self.t_first > self.t_last:
            raise ValueError(f"consistency sampler needs t_first <= t_last (got {self.t_first} > {self.t_last})")
        if self.read == "argmax" and self.read_top_p < 1.0:
            raise ValueError("consistency sampler: read_top_p cuts the draws of read='sample'; "
                             "with read='argmax' there is no draw to cut")
        return self

    def times(self) -> torch.Tensor:
        """The nfe read times, float64: (nfe,)."""
        later = torch.linspace(self.t_first, self.t_last, self.nfe - 1, dtype=torch.float64)  # [t_first] at nfe 2
        return torch.cat([torch.zeros(1, dtype=torch.float64), later])


def _batch_times(t, n: int, device) -> torch.Tensor:
    """A float, 0-dim or (n,) time -> float64 (n,)."""
    t = torch.as_tensor(t, dtype=torch.float64, device=device)
    return t.expand(n) if t.dim() == 0 else t.to(torch.float64)


def jump(x: torch.Tensor, *, delta: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """X_{s,t}(x) = ((1 - t)/(1 - s)) x + ((t - s)/(1 - s)) delta; x, delta (B, L, V), s, t (B,).

    Coefficients in float64, cast to x's dtype."""
    s, t = s.double()[:, None, None], t.double()[:, None, None]   # (B, 1, 1)
    a = ((1 - t) / (1 - s).clamp_min(1e-12)).to(x.dtype)
    return a * x + (1 - a) * delta.to(x.dtype)


def grid_jump_(x: torch.Tensor, delta: torch.Tensor, times: torch.Tensor, j: int) -> torch.Tensor:
    """The flow_map sampler's step j in place: x <- X_{t_j, t_{j+1}}(x) = a x + (1 - a) delta,
    a = (1 - t_{j+1}) / (1 - t_j) a float64 scalar of the grid; x and delta (n, L, V), same dtype."""
    a = float((1 - times[j + 1]) / (1 - times[j]))
    return x.mul_(a).add_(delta, alpha=1 - a)


class SoftmaxInput(nn.Module):
    """The network: the backbone applied to softmax(kappa_s x_s), kappa_s = 1 + s/(1 - s)^2.

    s/(1 - s)^2 x is the evidence of x_s about each token, so for s > 0 the input is (a sharpened)
    posterior of x_s under a uniform token prior: near-one-hot once the token is decided. The
    exact delta_{s,t} ignores per-position shifts of x and kappa_s >= 1 is invertible up to such
    a shift, so nothing the flow map needs is lost. x (B, L, V), s and t (B,) -> logits (B, L, V)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None,
                s: torch.Tensor | None = None) -> torch.Tensor:
        return self.backbone(softmax_input(x, s=t if s is None else s, dtype=_INPUT_DTYPE.get()), t=t, s=s)


def softmax_input(x: torch.Tensor, *, s, dtype: torch.dtype) -> torch.Tensor:
    """What SoftmaxInput's backbone reads: softmax(kappa_s x) in `dtype`, as float32; x (B, L, V),
    s a float or (B,) -> (B, L, V)."""
    s_ = _batch_times(s, x.shape[0], x.device).to(dtype)[:, None, None]              # (B, 1, 1)
    kappa = 1 + s_ / (1 - s_).clamp_min(1e-6) ** 2
    return (kappa * x.to(dtype)).softmax(-1).float()


def soft_target_kl(target: torch.Tensor, log_pred: torch.Tensor) -> torch.Tensor:
    """KL(target || pred) per token, summed over V and averaged over (B, L): target and log_pred
    (B, L, V), the gradient that of the cross-entropy to the soft target."""
    return (torch.xlogy(target, target) - target * log_pred).sum(-1).mean()


@FAMILIES.register("flow_map")
class FlowMap(Family):
    Params = FlowMapParams
    samplers = {"flow_map": FlowMapSamplerParams, "euler": EulerSamplerParams,
                "randomized": RandomizedSamplerParams, "consistency": ConsistencySamplerParams}
    version = 3  # 2: the flow_map sampler state in float32; 3: the input maps in float32 in training
    # backbone work of one step, in forward + backward passes (a backward counted as two
    # forwards): anchor 1; psd: target 2 forwards without gradient + prediction 1 = 8/3 in all;
    # lsd: the jvp (primal and tangent, with gradient) about 2 + target 1/3 = 10/3
    DISTILL_COST = {"none": 1.0, "psd": 8.0 / 3.0, "lsd": 10.0 / 3.0}
    train_cost = DISTILL_COST["psd"]

    def __init__(self, **kw):
        super().__init__(**kw)
        cost = self.DISTILL_COST[self.params.distill if self.params.distill_weight else "none"]
        f = self.params.distill_start
        # f of the passes at 1 pass a step, the rest at `cost`: the mean cost of a step, and the
        # fraction of the steps after which distillation starts
        self.train_cost = 1.0 / (f + (1.0 - f) / cost)
        self.distill_from = f * self.train_cost
        self.distill_cost = cost

    def training_phases(self) -> tuple[TrainingPhase, ...]:
        """anchor (the steps before `distill_from`, one pass each) and distill (the rest, the
        anchor and the distillation term: `DISTILL_COST` passes)."""
        if self.distill_cost == 1.0:
            return (TrainingPhase("anchor", progress=0.0, cost=1.0, share=1.0),)
        distill = TrainingPhase("distill", progress=self.distill_from, cost=self.distill_cost,
                                share=1.0 - self.distill_from)
        if self.distill_from <= 0:
            return (distill,)
        return (TrainingPhase("anchor", progress=0.0, cost=1.0, share=self.distill_from), distill)

    def backbone_spec(self) -> BackboneSpec:
        return BackboneSpec(cond="st", input="simplex")

    def build_backbone(self, config: BackboneConfig) -> nn.Module:
        backbone = super().build_backbone(config)
        return SoftmaxInput(backbone) if self.params.precondition == "softmax" else backbone

    # --- path ------------------------------------------------------------------------------
    def interpolate(self, x1: torch.Tensor, *, t: torch.Tensor, generator=None) -> torch.Tensor:
        """I_t = (1 - t) x_0 + t e_{x_1}, x_0 ~ N(0, I): x1 (B, L) ids, t (B,) -> (B, L, V) float32."""
        x0 = torch.randn((*x1.shape, self.vocab_size), generator=generator, device=x1.device)
        t = t.float()[:, None, None]
        # t added at the data token in place of a one-hot times t: the same sums, one buffer
        return x0.mul_(1 - t).scatter_add_(-1, x1[..., None], t.expand(*x1.shape, 1))

    @staticmethod
    def delta(model, x: torch.Tensor, *, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean denoiser delta_{s,t}(x) = softmax of the network's logits: (B, L, V), >= float32."""
        logits = model(x, s=s, t=t)
        return logits.to(torch.promote_types(logits.dtype, torch.float32)).softmax(-1)

    # --- training --------------------------------------------------------------------------
    def loss(self, model, x1, *, generator=None):
        t = self.params.time.sample(x1.shape[0], generator=generator, device=x1.device)   # (B,)
        logits = model(self.interpolate(x1, t=t, generator=generator), s=t, t=t)   # (B, L, V)
        anchor = F.cross_entropy(logits.float().transpose(1, 2), x1)
        p = self.params
        if p.distill == "none" or p.distill_weight == 0 or self.train_progress < self.distill_from:
            return anchor
        distill = (self.psd_loss if p.distill == "psd" else self.lsd_loss)(model, x1, generator=generator)
        return anchor + p.distill_weight * distill

    def training_floor_work(self, *, phase, x1, generator):
        """What a step of `phase` cannot skip besides its backbone passes (the cross-entropy of the
        anchor and of the prediction's log-softmax are the bare step's). Anchor: the noise and path
        (`interpolate`) and what the network reads of it (`softmax_input`, the evidence, float32 as
        in training). psd distillation, besides: the path at s and the maps of the two network
        inputs it adds (x_s, read by the first target call and the prediction alike, and the jump
        X_{s,u}), the target (`psd_target`: the two calls' softmaxes, the jump, the mix) on fixed
        logits in place of the network's, and the soft-target KL (`soft_target_kl`) with its
        backward to the log-probabilities. lsd declares no floor (its jvp is backbone work of
        another kind). Left out: the time draws (B numbers), the evidence head's shift and add."""
        p, (B, L), dev = self.params, x1.shape, x1.device
        distill = phase.progress >= self.distill_from and self.distill_cost > 1.0
        if distill and p.distill != "psd":
            return None
        t = p.time.sample(B, generator=generator, device=dev)                             # (B,)

        def read(x: torch.Tensor, s: torch.Tensor) -> None:
            if p.precondition == "softmax":
                softmax_input(x, s=s, dtype=torch.float32)
            if p.evidence_head:
                self.evidence(x, s, dtype=torch.float32)

        def anchor() -> None:
            read(self.interpolate(x1, t=t, generator=generator), t)

        if not distill:
            return anchor
        s_, u_, t_ = torch.rand(3, B, generator=generator, device=dev, dtype=torch.float64).sort(0).values
        logits = torch.randn(B, L, self.vocab_size, generator=generator, device=dev)      # the network's stand-in
        log_pred = logits.log_softmax(-1)

        def network(x: torch.Tensor, *, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            read(x, s)
            return logits

        def step() -> None:
            anchor()
            x_s = self.interpolate(x1, t=s_, generator=generator)                        # (B, L, V)
            with torch.no_grad():
                target = self.psd_target(network, x_s, s=s_, u=u_, t=t_)
            soft_target_kl(target, log_pred.detach().requires_grad_()).backward()

        return step

    def psd_loss(self, model, x1, *, generator=None) -> torch.Tensor:
        """Semigroup self-distillation, KL(sg[psd_target] || delta_{s,t}(I_s)) per token."""
        B, dev = x1.shape[0], x1.device
        r = torch.rand(4, B, generator=generator, device=dev, dtype=torch.float64)
        s, t = torch.minimum(r[0], r[1]), torch.maximum(r[0], r[1])                # (B,)
        t = torch.where(r[2] < self.params.end_prob, torch.ones_like(t), t)
        u = s + r[3] * (t - s)
        x_s = self.interpolate(x1, t=s, generator=generator)                         # (B, L, V)
        with torch.no_grad():
            target = self.psd_target(model, x_s, s=s, u=u, t=t)                    # (B, L, V)
        log_pred = model(x_s, s=s, t=t).float().log_softmax(-1)
        return soft_target_kl(target, log_pred)

    def psd_target(self, model, x_s: torch.Tensor, *, s, u, t) -> torch.Tensor:
        """gamma delta_{s,u}(x_s) + (1 - gamma) delta_{u,t}(X_{s,u}(x_s)): (B, L, V); s <= u <= t (B,).

        gamma = (1 - t)(u - s)/((1 - u)(t - s)) in float64 (0 when t = s), 1 - u clamped at 1e-12."""
        gamma = (1 - t) * (u - s) / ((1 - u).clamp_min(1e-12) * (t - s).clamp_min(_TINY))
        gamma = gamma.to(x_s.dtype)[:, None, None]                                 # (B, 1, 1)
        d_su = self.delta(model, x_s, s=s, t=u).to(x_s.dtype)
        d_ut = self.delta(model, jump(x_s, delta=d_su, s=s, t=u), s=u, t=t).to(x_s.dtype)
        return gamma * d_su + (1 - gamma) * d_ut

    def lsd_loss(self, model, x1, *, generator=None) -> torch.Tensor:
        """Lagrangian self-distillation, w(t) || d/dt X_st(I_s) - sg[b_t(X_st(I_s))] ||^2 per token,
        w = (1 - t)^2 ('denoiser') or 1 ('velocity')."""
        B, dev = x1.shape[0], x1.device
        r = torch.rand(2, B, generator=generator, device=dev, dtype=torch.float64) * (1 - self.params.eps)
        s, t = r.min(0).values, r.max(0).values                                    # (B,)
        x_s = self.interpolate(x1, t=s, generator=generator)                       # (B, L, V)

        def flow_map(t_: torch.Tensor) -> torch.Tensor:
            return jump(x_s, delta=self.delta(model, x_s, s=s, t=t_), s=s, t=t_)

        with sdpa_kernel(SDPBackend.MATH):  # the fused CPU attention kernels lack forward-mode AD
            X, dX = torch.func.jvp(flow_map, (t,), (torch.ones_like(t),))          # (B, L, V) each
        with torch.no_grad():
            X = X.detach()
            d_t = self.delta(model, X, s=t, t=t).to(X.dtype)                       # delta_{t,t}(X)
        one_minus_t = (1 - t).to(X.dtype)[:, None, None]                           # (B, 1, 1)
        if self.params.lsd_weight == "denoiser":   # (1 - t) d/dt X - sg[delta_tt(X) - X]
            residual = one_minus_t * dX - (d_t - X)
        else:                                       # d/dt X - sg[(delta_tt(X) - X)/(1 - t)]
            residual = dX - (d_t - X) / one_minus_t
        return residual.pow(2).sum(-1).mean()

    # --- sampling --------------------------------------------------------------------------
    def check_sampler(self, sampler, params):
        if sampler == "euler":
            steps_for(params.nfe, params.solver)
            if params.solver in ("heun", "rk4") and params.t_end >= 1:
                raise ValueError(f"solver {params.solver!r} evaluates 1/(1 - t) at t_end = 1: set t_end < 1")
        elif sampler not in self.samplers:
            raise ValueError(f"flow_map has no sampler {sampler!r} (samplers: {', '.join(self.samplers)})")

    @staticmethod
    def grid(nfe: int, *, power: float = 1.0) -> torch.Tensor:
        """t_j = 1 - (1 - j/nfe)^power, j = 0..nfe: float64 (nfe + 1,) from 0 to exactly 1."""
        return time_grid(nfe, warp=lambda u: 1 - (1 - u) ** power)

    @torch.no_grad()
    def sample(self, model, *, n, sampler, params, generator):
        """x_0 and the state in float32 (the network reads float32; the jump coefficients are
        float64 scalars); the last jump is never formed: its delta is decoded from its logits.
        The network's input maps compute in `params.input_precision` for these calls only."""
        self.check_sampler(sampler, params)
        token = _INPUT_DTYPE.set(getattr(torch, params.input_precision))
        try:
            return self._sample(model, n=n, sampler=sampler, params=params, generator=generator)
        finally:
            _INPUT_DTYPE.reset(token)

    def _sample(self, model, *, n, sampler, params, generator):
        dev = generator.device
        x = torch.randn(n, self.seq_len, self.vocab_size, generator=generator, device=dev)  # x_0 (n, L, V)
        if sampler == "euler":
            return self._sample_euler(model, x.double(), params)
        if sampler == "randomized":   # the anchor delta_{t,t} only, as a denoiser
            _, logits = randomized_steps(
                lambda x_t, t: model(x_t, s=t.expand(n), t=t.expand(n)),
                lambda x1, t: self.interpolate(x1, t=t.expand(n), generator=generator),
                x, time_grid(params.nfe, t_end=params.t_end).to(dev), generator=generator)
            return self._decode(logits, params, generator)
        if sampler == "consistency":
            return self._sample_consistency(model, x, params, generator)
        times = self.grid(params.nfe, power=params.grid_power)                      # float64, on the host
        for j in range(params.nfe):
            s, t = times[j].to(dev).expand(n), times[j + 1].to(dev).expand(n)
            logits = model(x, s=s, t=t)                                             # (n, L, V)
            if j + 1 < params.nfe:
                grid_jump_(x, logits.softmax(-1), times, j)
        return self._decode(logits, params, generator)

    @staticmethod
    def _decode(logits: torch.Tensor, params: SamplerParams, generator: torch.Generator) -> torch.Tensor:
        if params.decode == "sample":
            return sample_categorical(logits, generator=generator, temperature=params.temperature,
                                      top_p=params.top_p)
        return logits.argmax(-1)

    def _sample_consistency(self, model, x: torch.Tensor, params: ConsistencySamplerParams,
                            generator: torch.Generator) -> torch.Tensor:
        n, dev = x.shape[0], x.device
        times, one = params.times().to(dev), torch.ones(n, dtype=torch.float64, device=dev)
        for j in range(params.nfe):
            logits = model(x, s=times[j].expand(n), t=one)                          # delta_{t_j,1} (n, L, V)
            if j + 1 < params.nfe:
                x1 = (logits.argmax(-1) if params.read == "argmax"
                      else sample_categorical(logits, generator=generator, top_p=params.read_top_p))  # (n, L)
                x = self.interpolate(x1, t=times[j + 1].expand(n), generator=generator)
        return self._decode(logits, params, generator)

    def _sample_euler(self, model, x0: torch.Tensor, params: EulerSamplerParams) -> torch.Tensor:
        n = x0.shape[0]

        def velocity(r: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            rr = r.to(torch.float64).expand(n)
            d = model(x, s=rr, t=rr).double().softmax(-1)
            return (d - x) / (1 - r.to(torch.float64))

        grid = time_grid(steps_for(params.nfe, params.solver), t_end=params.t_end).to(x0.device)
        return solve(velocity, x0, grid, solver=params.solver).argmax(-1)

    # --- oracle ----------------------------------------------------------------------------
    def model_evidence(self, x, t, s):
        """The evidence of the state x_s, whose time is s (t for the diagonal delta_{t,t}), in the
        network's input dtype (float64 unless a sampler asks for float32)."""
        return self.evidence(x, t if s is None else s, dtype=_INPUT_DTYPE.get())

    def evidence(self, x_t, t, *, dtype: torch.dtype = torch.float64):
        """log N(x_t; t e_v, (1 - t)^2 I) in v, up to a constant: t x_t[v] / (1 - t)^2, in `dtype`.

        x_t (B, L, V), t (B,); 1 - t is clamped at 1e-6 (t = 1: the largest coordinate wins)."""
        x_t = x_t.to(dtype)
        t = _batch_times(t, x_t.shape[0], x_t.device).to(dtype)[:, None, None]
        return t * x_t / (1 - t).clamp_min(1e-6) ** 2

    def oracle_model(self, posterior, *, steps_per_unit: int = 32):
        """model(x, t=, s=) -> log delta_{s,t}(x) of the exact flow (see the module docstring).

        One call integrates the diagonal flow from s to t with ceil(max(t - s) * steps_per_unit)
        exponential midpoint steps (a common step count for the batch, per-row step sizes h),
        two posterior evaluations each."""

        def denoiser(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            return posterior(self.evidence(x, r)).exp()                            # D_r(x) (B, L, V)

        def model(x: torch.Tensor, t=None, s=None) -> torch.Tensor:
            x = x.double()
            B = x.shape[0]
            t = _batch_times(t, B, x.device)
            s = t if s is None else _batch_times(s, B, x.device)
            gap = t - s                                                            # (B,)
            n_steps = math.ceil(float(gap.max()) * steps_per_unit - 1e-9)
            d_s = denoiser(x, s)
            if n_steps <= 0:
                return d_s.clamp_min(_TINY).log()
            h = gap / n_steps
            X, d = x, d_s
            for k in range(n_steps):
                r = s + k * h
                if k:
                    d = denoiser(X, r)
                mid = jump(X, delta=d, s=r, t=r + h / 2)
                X = jump(X, delta=denoiser(mid, r + h / 2), s=r, t=r + h)
            s3, t3, g = s[:, None, None], t[:, None, None], gap[:, None, None]       # (B, 1, 1)
            delta = ((1 - s3) * X - (1 - t3) * x) / g.clamp_min(_TINY)              # (B, L, V)
            delta = torch.where(g > 1e-9, delta, d_s)
            return delta.clamp_min(_TINY).log()

        return model
