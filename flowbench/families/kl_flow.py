"""KL-geodesic flow matching in logit space (Sevriugov & Oseledets 2024, arXiv 2411.16821;
seed: 004_9295f9b677f44bb2.txt). Measured behaviour, recipe ablations and failure modes:
docs/families.md.

Tokens and path. A clean token v is the beta-smoothed one-hot x_1(v) = (1 - beta) e_v + beta / V.
The path between a noise point x_0 and x_1 is the KL geodesic of the simplex, i.e. a straight
line in logit space (t = 0 noise, t = 1 data, as everywhere in flowbench):

    l_t = (1 - t) l_0 + t l_1(v),      x_t = softmax(l_t),      dl_t/dt = l_1(v) - l_0,

with l_1(v) = log x_1(v) and Gaussian noise logits l_0 ~ N(0, sigma^2 I_V) per position
(sigma = `noise_scale`; the seed leaves the source rho_0 open). Softmax forgets a per-position
additive constant, so the state is kept as *centered* logits l - mean_v(l) (a bijection of x_t:
its centered log-probabilities). Centered, l_1(v) = Delta (e_v - 1/V), Delta = log(1 + (1 - beta) V / beta).

Denoiser. BackboneSpec(cond='t', input='simplex'): the network reads x_t = softmax(l_t) (the
seed's simplex point; `input='logits'` feeds the centered l_t instead, which a narrow backbone
reads worse) and t (B,), and outputs logits of P_theta(x_1^i | x_t, t), trained by cross-entropy
with t drawn by `time` (default U[0, 0.4], KL-Flow's `max_t`: tokens are decided by t ~ 0.3 at
beta = 0.01, V = 256), stratified over the batch. Its expected target gives the flow velocity
(seed, mechanism 1):

    l1_hat = E[l_1 | x_t] = Delta (p_theta - 1/V),      v(l_t, t) = (l1_hat - l_t) / (1 - t).

Samplers, on the uniform grid t_k = k t_end / K (t_end None: the top of the training times); the
output is decoded from the denoiser's last output (`decode`: 'sample' draws x_1 from it, the
default, so that NFE 1 samples the marginals instead of repeating their mode; 'argmax' takes its
mode):
    ode          integrate v from l_0 with `solver` (euler | midpoint | heun | rk4, see
                 flowbench/families/ode.py); K = nfe / stages.
    randomized   at t_k: draw x_1 ~ P_theta(. | x_{t_k}), draw fresh noise l_0 and set
                 l_{t_{k+1}} = (1 - t_{k+1}) l_0 + t_{k+1} l_1(x_1) (seed, section 2.3); K = nfe.
    hybrid       a step starting at t_k < t_star is an `ode` step, later steps are randomized;
                 K is the grid size whose calls stages * #{k: t_k < t_star} + #{k: t_k >= t_star}
                 equal nfe (ValueError when none does). t_star = 1 is `ode`, t_star = 0 `randomized`.

Time horizon: v is singular at t = 1. Euler and midpoint never evaluate it there, so t_end = 1
is allowed; heun and rk4 evaluate the end of each step and need t_end < 1 (e.g. 0.999) when
their ode part reaches t = 1. The grid is uniform in t (no reparameterisation).

Evidence (oracle mode). With P = I - 11^T / V the centering map and y = P l_t the observed state,
y = (1 - t) P l_0 + t Delta P e_v, and P l_0 is a Gaussian N(0, sigma^2 P) on the sum-zero plane.
Its log-density there, dropping terms free of v (||P e_v||^2 = 1 - 1/V for every v), is

    ev[v] = t Delta y_v / (sigma^2 (1 - t)^2),

linear in y: a per-position constant added to the logits shifts ev by a v-free constant, which
is why log x_t (the network input's log) serves as well as l_t; it is centered anyway. The oracle
returns the exact log posterior as denoiser logits (the default `Family.oracle_model`); with
`evidence_head` (default) the network's logits are added to ev (base.EvidenceHead).

Defaults. beta = 0.01 (the seed's). t_star = 0.3 (the seed found 0.28 on Fine Web).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from flowbench.backbone import BackboneSpec
from flowbench.families.base import (Family, Params, SamplerParams, StatePrecision,
                                     randomized_steps, sample_categorical, time_grid)
from flowbench.families.ode import STAGES, solve, steps_for
from flowbench.families.time_sampling import TimeSampling
from flowbench.registry import FAMILIES


class KLFlowParams(Params):
    # smoothing of the one-hot targets (the seed's value): sets the data logit gap Delta
    beta: float = Field(0.01, gt=0.0, lt=1.0)
    # std of the Gaussian noise logits l_0 (unit: the seed's standard normal prior)
    noise_scale: float = Field(1.0, gt=0.0)
    # what the network reads: the simplex point x_t = softmax(l_t), or the centered logits l_t
    input: Literal["probs", "logits"] = "probs"
    # logits = network + the position's own evidence (base.EvidenceHead): the network learns context only
    evidence_head: bool = True
    # training times; a family trained on [0, t_max] samples on [0, t_max] and reads the
    # denoiser off there (KL-Flow's `max_t`), unless a sampler sets t_end
    time: TimeSampling = TimeSampling(high=0.4)
    # probability that a training batch row reads the network's own first-pass estimate of x_1
    # (base.Family.self_conditioned; Plaid uses 0.25, CDCD 0.5); samplers always feed it back
    self_cond: float = Field(0.0, ge=0.0, le=1.0)


class _Decode(StatePrecision):
    """decode: x_1 from the denoiser's last output, drawn from it (NFE 1 samples the marginals) or
    its mode. state_precision (StatePrecision) sets the dtype of the state, noise and denoiser
    log-probabilities; float32 (default) halves the sampler's own work at batch 256 against float64."""

    decode: Literal["sample", "argmax"] = "sample"


class RandomizedParams(_Decode):
    t_end: float | None = Field(None, gt=0.0, le=1.0)  # time horizon; None: the trained t_max


class ODEParams(_Decode):
    # fixed-grid ODE solver; nfe counts its stages (rk4 spends 4 calls a step)
    solver: Literal["euler", "midpoint", "heun", "rk4"] = "euler"
    t_end: float | None = Field(None, gt=0.0, le=1.0)  # time horizon; None: the trained t_max


class HybridParams(ODEParams):
    t_star: float = Field(0.3, ge=0.0, le=1.0)  # ode steps while t < t_star, randomized after


@FAMILIES.register("kl_flow")
class KLFlow(Family):
    Params = KLFlowParams
    samplers = {"ode": ODEParams, "randomized": RandomizedParams, "hybrid": HybridParams}
    # 2: the noise and path drawn in float32 for training; 3: the network's evidence head in float32
    version = 3

    def __init__(self, **kw):
        super().__init__(**kw)
        V, beta = self.vocab_size, self.params.beta
        self.delta = math.log1p((1 - beta) * V / beta)  # logit gap of a smoothed one-hot

    def backbone_spec(self) -> BackboneSpec:
        return BackboneSpec(cond="t", input="simplex", self_cond=self.self_cond_rate > 0)

    # --- path ----------------------------------------------------------------------------
    def target_logits(self, x1: torch.Tensor, *, dtype=torch.float64) -> torch.Tensor:
        """Centered l_1 = Delta (e_x1 - 1/V): (B, L) ids -> (B, L, V) float64 (or dtype)."""
        return self.delta * (F.one_hot(x1, self.vocab_size).to(dtype) - 1.0 / self.vocab_size)

    def noise(self, shape: tuple[int, ...], *, generator: torch.Generator | None, device=None,
              dtype=torch.float64) -> torch.Tensor:
        """Centered noise logits P l_0, l_0 ~ N(0, sigma^2 I): (B, L) -> (B, L, V) float64 (or dtype)."""
        device = device if device is not None or generator is None else generator.device
        l0 = torch.randn((*shape, self.vocab_size), generator=generator, dtype=dtype, device=device)
        l0.mul_(self.params.noise_scale)
        return l0.sub_(l0.mean(-1, keepdim=True))

    def interpolate(self, x1: torch.Tensor, t: torch.Tensor, *, generator: torch.Generator | None,
                    dtype=torch.float64) -> torch.Tensor:
        """Centered l_t = (1 - t) l_0 + t l_1(x1), x_t = softmax(l_t); t (B,) -> (B, L, V) float64
        (or dtype: training draws its path in float32, the network's input precision)."""
        l0 = self.noise(tuple(x1.shape), generator=generator, device=x1.device, dtype=dtype)
        t = t.to(dtype)[:, None, None]  # (B, 1, 1)
        # (1 - t) l_0 + t Delta (e_x1 - 1/V) without the (B, L, V) one-hot: t Delta added at x_1
        l_t = l0.mul_(1 - t).sub_(t * (self.delta / self.vocab_size))
        return l_t.scatter_add_(-1, x1[..., None], (t * self.delta).expand(*x1.shape, 1))

    def model_input(self, l_t: torch.Tensor) -> torch.Tensor:
        """The network's view of the state: x_t = softmax(l_t) or the centered l_t, (B, L, V) float64."""
        return l_t.softmax(-1) if self.params.input == "probs" else l_t

    # --- training ------------------------------------------------------------------------
    def loss(self, model, x1, *, generator=None):
        t = self.params.time.sample(x1.shape[0], generator=generator, device=x1.device)  # (B,)
        l_t = self.interpolate(x1, t, generator=generator, dtype=torch.float32)        # (B, L, V)
        logits = self.self_conditioned(model, self.model_input(l_t), generator=generator, t=t)  # (B, L, V)
        return F.cross_entropy(logits.float().transpose(1, 2), x1)

    def training_floor_work(self, *, phase, x1, generator):
        """What a training step cannot skip besides its backbone pass (the cross-entropy is the bare
        step's): the noise and the path (`interpolate`, float32 as `loss`), the network's input
        (`model_input`) and, with the evidence head, the evidence, a linear map of the centered
        logits (`log_likelihood` on l_t itself, not read back from probabilities). Left out: the
        time draw (B numbers), the evidence head's per-position shift and add."""
        t = self.params.time.sample(x1.shape[0], generator=generator, device=x1.device)  # (B,)

        def work() -> torch.Tensor:
            l_t = self.interpolate(x1, t, generator=generator, dtype=torch.float32)      # (B, L, V)
            x = self.model_input(l_t)
            return self.log_likelihood(l_t, t, dtype=torch.float32) if self.params.evidence_head else x

        return work

    # --- sampling ------------------------------------------------------------------------
    def _grid(self, sampler: str, params: SamplerParams) -> tuple[torch.Tensor, int]:
        """(grid t_0..t_K (K+1,), number n_ode of leading ode steps); ValueError if no grid fits."""
        t_end = self.params.time.t_max if params.t_end is None else params.t_end
        if sampler == "randomized":
            return time_grid(params.nfe, t_end=t_end), 0
        stages = STAGES[params.solver]
        if sampler == "ode":
            grid, n_ode = time_grid(steps_for(params.nfe, params.solver), t_end=t_end), None
        else:
            for K in range(1, params.nfe + 1):
                grid = time_grid(K, t_end=t_end)
                n_ode = int((grid[:-1] < params.t_star).sum())
                if stages * n_ode + (K - n_ode) == params.nfe:
                    break
            else:
                raise ValueError(f"hybrid: no uniform grid spends exactly nfe={params.nfe} calls with "
                                 f"solver {params.solver!r} and t_star={params.t_star}")
        n_ode = len(grid) - 1 if n_ode is None else n_ode
        if params.solver in ("heun", "rk4") and n_ode and grid[n_ode] >= 1.0:
            raise ValueError(f"solver {params.solver!r} evaluates the velocity at the step's end, "
                             f"singular at t = 1: set t_end < 1")
        return grid, n_ode

    def check_sampler(self, sampler: str, params: SamplerParams) -> None:
        self._grid(sampler, params)

    def _denoise(self, model, l_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log P(x_1 | x_t, t) in the state's dtype: l_t (n, L, V), t 0-dim -> (n, L, V)."""
        return model(self.model_input(l_t), t=t.expand(l_t.shape[0])).to(l_t.dtype).log_softmax(-1)

    @torch.no_grad()
    def sample(self, model, *, n, sampler, params, generator):
        _, logp = self.trajectory(model, n=n, sampler=sampler, params=params, generator=generator,
                                  final_state=False)
        if params.decode == "argmax":
            return logp.argmax(-1)
        return sample_categorical(logp, generator=generator, temperature=params.temperature, top_p=params.top_p)

    @torch.no_grad()
    def trajectory(self, model, *, n: int, sampler: str, params: SamplerParams,
                   generator: torch.Generator, final_state: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Run a sampler without decoding: (final state (n, L, V), last log P(x_1 | x_t) (n, L, V)).

        final_state=False (what `sample` decodes needs only the last log P): an all-Euler ode run
        stops at its last call's denoiser, leaving out that step's velocity and update (seven
        (n, L, V) passes: NFE 1 at batch 256 took 202 ms with them, 179 without); the state comes
        back as None and the log P is the full run's, bit for bit."""
        model = self.sampling_model(model)
        grid, n_ode = self._grid(sampler, params)
        device = generator.device
        grid = grid.to(device)
        dtype = getattr(torch, params.state_precision)
        l = self.noise((n, self.seq_len), generator=generator, dtype=dtype)  # (n, L, V) centered l_0
        last: dict[str, torch.Tensor] = {}

        def velocity(t, l_t):
            last["logp"] = logp = self._denoise(model, l_t, t)
            l1_hat = self.delta * (logp.exp() - 1.0 / self.vocab_size)
            return (l1_hat - l_t) / (1 - t)

        if n_ode and not final_state and n_ode == len(grid) - 1 and params.solver == "euler":
            times = grid.to(dtype)                                        # the times solve() passes
            l = solve(velocity, l, times[:-1], solver="euler")           # all steps but the last
            return None, self._denoise(model, l, times[-2])              # the last step's call
        if n_ode:
            l = solve(velocity, l, grid[: n_ode + 1], solver=params.solver)
        l, logp = randomized_steps(
            lambda l_t, t: self._denoise(model, l_t, t),
            lambda x1, t: ((1 - t) * self.noise((n, self.seq_len), generator=generator, dtype=dtype)
                           + t * self.target_logits(x1, dtype=dtype)),
            l, grid[n_ode:], generator=generator)
        return l, last["logp"] if logp is None else logp

    # --- oracle --------------------------------------------------------------------------
    def log_likelihood(self, l_t: torch.Tensor, t: torch.Tensor, *, dtype: torch.dtype = torch.float64
                       ) -> torch.Tensor:
        """t Delta y / (sigma^2 (1 - t)^2), y = centered l_t; t (B,) -> (B, L, V) float64 (or dtype)."""
        y = l_t.to(dtype)
        t = torch.as_tensor(t, dtype=torch.float64, device=y.device).reshape(-1)[:, None, None]  # (B, 1, 1)
        scale = (t * self.delta / (self.params.noise_scale**2 * (1 - t) ** 2)).to(dtype)   # float64, then cast
        return (y - y.mean(-1, keepdim=True)).mul_(scale)

    def model_evidence(self, x, t, s):
        """The evidence in the network input's precision (float32 in training and for a float32
        state; float64 for a float64 state)."""
        return self.evidence(x, t, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)

    def evidence(self, x_t, t, *, dtype: torch.dtype = torch.float64):
        """ev[b, i, v] = t Delta y_v / (sigma^2 (1 - t)^2), y the centered logits: (B, L, V) float64
        (or dtype).

        x_t is the network input (`model_input`): probabilities are mapped back by their log."""
        x = x_t.to(dtype)
        if self.params.input == "probs":
            x = x.clamp_min(torch.finfo(dtype).tiny).log()
        return self.log_likelihood(x, t, dtype=dtype)
