"""Categorical flow map: a two-time mean denoiser on the simplex, trained by self-distillation.

Seeds: 002_*.txt (variational flow matching, categorical flow maps) and
003_*.txt (flow maps, mean denoiser, semigroup condition). Time: t = 0 noise, t = 1 data.

Path. Each token is a one-hot e_v in R^V; noise is Gaussian in that space, per position:

    I_t = (1 - t) x_0 + t x_1,    x_0 ~ N(0, I_V),  x_1 = e_{x_1}.

Denoiser D_t(x) = E[x_1 | I_t = x] (per position, on the simplex) and velocity
b_t(x) = (D_t(x) - x) / (1 - t). The network reads (x_s, s, t) and returns logits whose softmax is
the mean denoiser delta_{s,t}(x) (003, "Flow maps for language"), with delta_{t,t} = D_t; the flow
map is

    X_{s,t}(x) = ((1 - t)/(1 - s)) x + ((t - s)/(1 - s)) delta_{s,t}(x),

so X_{s,s} = x, X_{s,1} = delta_{s,1} and a simplex point stays on the simplex. The backbone reads
x_s itself, or softmax(kappa_s x_s) with `precondition: softmax` (SoftmaxInput).

Loss = anchor + `distill_weight` * distillation, everything per token (mean over batch and L):

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
          summed over the V coordinates, b_t(x) = (delta_{t,t}(x) - x)/(1 - t); d/dt by
          forward-mode AD (torch.func.jvp, attention on the math backend which supports it).
          Times: sorted pair of uniforms scaled into [0, 1 - eps] (b_t diverges at t = 1).
          Weight (`lsd_weight`): 'velocity' w = 1 is the seed's loss; its 1/(1 - t)^2 scale
          swamps the anchor and training collapses to an input-blind delta (a constant delta is
          an exact flow map, of a constant denoiser). 'denoiser' w = (1 - t)^2 measures the
          residual in simplex units, (1 - t) d/dt X - sg[delta_{t,t}(X) - X]; any positive
          weight keeps the same minimiser.
  none    anchor only (a plain VFM flow; the flow_map sampler is then not distilled).

Samplers:
  flow_map  k = nfe jumps on t_j = 1 - (1 - j/k)^grid_power (uniform for grid_power = 1),
            x <- X_{t_j, t_{j+1}}(x) from x_0 ~ N(0, I); the last jump lands on delta_{t_{k-1},1},
            decoded by argmax or a float64 categorical draw (`decode`). x_0 and the state are
            float32 (the network's input precision), updated in place.
  randomized  seed 004's randomized sampler (base.randomized_steps) on the anchor: at t_k draw
            x_1 ~ delta_{t_k,t_k}(x) per position, then x <- I_{t_{k+1}} with fresh noise x_0; the
            last call's delta is decoded (`decode`, default a draw). nfe calls on a uniform grid
            to `t_end`. No flow map: it spends NFE as a denoiser-only sampler does, and no error
            of one step rides along the trajectory, which the euler flow of the same anchor
            carries to the end.
  consistency  multistep consistency sampling (Song et al., arXiv 2303.01469, Algorithm 1) with
            the map to the data end: at grid time t_j read the endpoint x_1 = argmax
            delta_{t_j,1}(x) (`read`: or a draw), then x <- I_{t_{j+1}} = (1 - t_{j+1}) x_0' +
            t_{j+1} e_{x_1} with fresh noise x_0'; the last endpoint is decoded (`decode`). Grid:
            t_0 = 0, then k - 1 times evenly from `t_first` to `t_last` (k = nfe; k = 2: t_first
            only). With the exact map every grid samples the data (X_{0,1}(x_0) already does, and
            a re-noised sample is a path sample); with a trained one each restart re-reads the map
            from a fresh path state, so its error does not ride along as in the flow_map sampler.
            At 8000 passes (nfe_sweep), mean of 2 seeds, gen PPL (entropy; data 3.06) at NFE 2 / 4
            / 8: t_first 0.6, t_last 0.8 (defaults) 272 (2.72) / 167 (2.86) / 115 (2.98); t_first
            0.7 170 (2.53) / 107 (2.67) / 77 (2.87); the flow_map sampler scores 353 / 472 at NFE
            2 / 4. The argmax read trades entropy for gen PPL (a draw at NFE 4: 358, entropy 3.05);
            reads at t >= 0.8 leave the sample unchanged (the map's endpoint is settled there).
            Nucleus reads (`read: sample`, `read_top_p`) move that frontier: at NFE 4, t_first 0.7,
            top_p 0.3 / 0.4 score 130 (2.83) / 143 (2.90) (mean of 3 seeds), 0.5 154 (2.95; 2
            seeds), against 182 at entropy 2.90 for argmax reads on the best grid (a probe drawing
            at temperature 0.5 instead, not a parameter: 146 at 2.90). nfe_sweep's rows: top_p 0.4
            149 (2.89) at NFE 4, 93.1 (2.95) at NFE 8. Reads packed closer (t_first 0.7, t_last
            0.75) move it further: at NFE 4, top_p 0.4 132.1 (2.915), mean of 8 sampling seeds
            (per seed 124-141, entropy 2.900-2.927; nfe_sweep's row, seed 0: 139.5 (2.910)),
            against 140.8 (2.892) with t_last 0.8; top_p 0.35 126.3 (2.900, 3 seeds; the row 134.9
            (2.898)); t_last 0.85 or t_first 0.75 read later and lose (164 / 196), t_first 0.65 or
            all three at 0.7 lose entropy's worth in gen PPL (153 at 2.95 / 182). With 2048 samples
            (nfe_sweep's rows labelled samples=2048; their first 256 are the 256-sample row's):
            top_p 0.4 133.7 (2.910), top_p 0.35 131.1 (2.893), t_last 0.8 143.5 (2.889); mdlm's
            NFE 64 27.5. The last decode barely matters: the endpoint is settled at t_last.
  euler     the diagonal flow dx/dt = b_t(x) solved by `solver` on a uniform grid to `t_end`,
            nfe velocity calls (flowbench.families.ode); read-out: argmax of the final state.
            heun and rk4 evaluate b at t_end, so they need t_end < 1.
  Every sampler takes `input_precision`: the network's softmax input and evidence head (float32
  in training) run in float32 (default) or float64 for the sampler's calls. On nfe_sweep's model
  (trained with float64 maps) float32 drew the float64 samples token for token on all 20
  flow_map and consistency rows, at about a tenth less time per call at batch 256
  (docs/performance.md).

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

Recipe (defaults set by measurement; README "Recipe ingredients"). `evidence_head` on: logits =
network + t x_s / (1 - s)^2 at the state's time s, so delta_{s,s} with a zero network is the
single-position posterior. gen PPL (entropy) at NFE 1 / 4 / 16 and randomized 64
(suites/recipe_ablation.yaml: L = 32, d = 64 x 3, 1000 passes, 256 samples, exact judge; mdlm at
the same budget: 368 at NFE 64): defaults 61827 (0.00: the NFE-1 map, distilled for only half the
budget, still collapses) / 6470 (3.01) / 6845 (3.10) / 6807; without the evidence head 11624 /
12387 / 11659 / 7940; without the softmax input 27502 (0.39) / 8680 / 8802 / 8551; distilled from
the first step (distill_start 0) 11171 / 12342 / 11243 / 11008.
`precondition: softmax` and `distill_start: 0.5` (defaults): with the raw Gaussian input and
distillation from the first step the anchor never learnt context: cross-entropy of delta_{t,t}
on validation data at t = 0.7 / 0.8, 500 to 8000 passes alike, 2.52 / 0.405 against 2.48 / 0.39
for the context-free posterior (unigram x evidence) and 1.07 / 0.07 exact, and gen PPL stayed at
8700-10700 for every NFE. The linear embedding of x_s sees N(0, (1 - t)^2 I_V) noise of about
sqrt(V) times the signal's norm; read through softmax(kappa_s x_s), 1000 anchor-only steps
reach 2.18 / 0.26 (a fifth and two fifths of what context is worth), with the raw input 2.48 /
0.40. Distillation then starts from an anchor that reads context (FLM's order: the flow first,
then the map).
`time` (anchor times) stays uniform: logit_normal(loc 0.75, scale 0.7), which puts most anchor
batches in t = 0.5-0.85 where the exact and context-free cross-entropies part, raised the share
of context captured at t = 0.5 / 0.6 / 0.7 / 0.8 from 0.04 / 0.15 / 0.35 / 0.45 to 0.15 / 0.30 /
0.43 / 0.46 at 2000 passes, but gen PPL only by about 4% (NFE 4 5123 -> 4920, randomized 64
4673 -> 4536; both before the turn), and at 8000 passes (nfe_sweep's budget, seed 0) it is worse
everywhere: randomized 256 100 against 62.6, consistency NFE 4 (t_first 0.7, top_p 0.4) 219 (2.90)
against 149 (2.89), the NFE-1 map 452 against 265. At 8000 passes (nfe_sweep) the anchor
captures 0.50 / 0.52 / 0.70 / 0.88 with uniform times; the euler flow of that anchor scores 325
at NFE 32 and its randomized sampler 128 / 89 / 63 at NFE 64 / 128 / 256: the deterministic flow
(and the flow map distilled from it) carries each step's error to the end, which bounds the
few-step samplers.
`end_prob` stays 0.25: 0.5 (more semigroup batches on the maps to t = 1, the ones the few-step
samplers read) scored worse at 8000 passes, seed 0: consistency NFE 4 (t_first 0.7, argmax reads)
130 (2.70) against 109 (2.66), the NFE-1 map 322 against 265, and randomized 256 78 against 63
although the two runs differ only in their last 1500 steps, a spread that single-seed probes of
a 10% effect cannot resolve.
Training seeds (suites/flow_map_seeds.yaml: nfe_sweep's budget, seeds 0, 1, 2): seed 1's anchor
does not turn. Its validation cross-entropy stalls at 3.18 from step 2000 to 4000 (seeds 0 and 2:
3.07 and 3.03 at step 4000) and every sampler stays at word frequencies (randomized 256 4225,
consistency NFE 4 3750-3950, the NFE-1 map 10069). Seeds 0 / 2: randomized 256 62.6 / 38.7;
consistency NFE 4 (t_first 0.7, t_last 0.75) top_p 0.4 139.5 (2.910) / 139.6 (2.979), top_p 0.35
134.9 (2.898) / 134.6 (2.970); the NFE-1 map 265 / 422. The recipe turns at this budget on two
seeds of three. Seed 1's first 4000 steps again with anchor times focused on the band (the
anchor's cross-entropy under uniform times at step 4000): logit_normal(loc 0.6, scale 1) 3.070,
logit_normal(0.75, 0.7) 3.085, against 3.174 with uniform times: focused times make that seed
turn. Trained to 8000 passes with logit_normal(loc 0.6, scale 1) the turn is no more reliable:
seed 1 learns (randomized 256 121, consistency NFE 4 top_p 0.35 209 (2.88), the NFE-1 map 404),
seed 0 loses most of its quality (175, 418 (2.93), 653 against 62.6, 134.9, 265 with uniform
times) and seed 2 does not turn at all (randomized 256 2273, against 38.7). With uniform times a
fourth seed (3) turns (randomized 256 57.4, consistency NFE 4 top_p 0.35 188 (2.94), the NFE-1
map 634): three of four. So uniform times stay the default. Milder focus does not turn seed 1
either (its anchor at step 4000): logit_normal(0.5, 1.4) 3.171; half of each batch uniform,
half logit_normal(0.6, 1) 3.177.
What decides the stall is the initial weights, not the data order or the noise: the anchor at
step 2000 (seed 1's own run 3.19; seeds 0 / 2 / 3 3.14 / 3.09 / 3.10) with seed 1's weights and
seed 0's batches and noise 3.21, with seed 0's weights and seed 1's batches 3.12. No single part
carries it: seed 1's weights with seed 0's embedding and head, or blocks, or time embedding, all
stall (3.19); with seed 0's embedding, head and blocks together (seed 1's time embedding) the
anchor turns (3.12). Nor the scheme or the schedule: on seed 1, xavier-uniform (DiT's) or
normal(0, 0.02) (GPT-2's) linear weights 3.19 / 3.23, attention gates opened at the start
(adaLN gate bias 1) 3.19, learning rate 1e-3 3.19, warmup 1000 steps 3.20: at this size (d = 64 x
3 layers, 4 heads) whether context is picked up by step 4000 is a draw of the initialisation.
How often it fails, over eight seeds (the anchor at step 3000; seeds 0 / 1 from their runs): 3.09,
3.18, 3.06, 3.07, 3.20, 3.11, 3.08, 3.18 for seeds 0-7: four turn by then (0, 2, 3, 6), one is
slower (5) and three sit on the plateau (1, 4, 7). Focused anchor times (logit_normal(0.6, 1))
on two of those: seed 4 stays (3.20), seed 7 moves (3.14 against 3.18).
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
from flowbench.families.base import (BackboneSpec, Family, Params, SamplerParams, TrainingPhase,
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
        dtype = _INPUT_DTYPE.get()
        s_ = _batch_times(t if s is None else s, x.shape[0], x.device).to(dtype)[:, None, None]  # (B, 1, 1)
        kappa = 1 + s_ / (1 - s_).clamp_min(1e-6) ** 2
        return self.backbone((kappa * x.to(dtype)).softmax(-1).float(), t=t, s=s)


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
        return (torch.xlogy(target, target) - target * log_pred).sum(-1).mean()

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
        return 1 - (1 - time_grid(nfe)) ** power

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
