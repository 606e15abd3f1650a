"""Discrete Flow Matching (DFM, Gat et al. 2024): a CTMC along a per-position mixture path.

Seed: 001_3fff019ea56c65fa.txt ("Discrete Flow Matching"). Time convention as in
docs/conventions.md: x_0 is the source (noise), x_1 the data, t runs from 0 to 1.

Probability path. Per position i, with a source token x_0^i and a scheduler kappa_t,

    p_t(x^i | x_0, x_1) = (1 - kappa_t) delta_{x_0^i}(x^i) + kappa_t delta_{x_1^i}(x^i),
    kappa_t = t^n   (`n`, polynomial scheduler: kappa_0 = 0, kappa_1 = 1, kappa'_t = n t^(n-1)).

Sources (`source`):
    mask     x_0^i = [MASK] (id V, one extra embedding): the absorbing path.
    uniform  x_0^i ~ U{0..V-1}: a source draw may coincide with x_1^i.

Velocity. The conditional rate u_t(y, z | x_1) = kappa'_t / (1 - kappa_t) (delta_{x_1}(y) - delta_z(y))
generates the path (flux into x_1: kappa'_t/(1-kappa_t) * (1 - kappa_t) = d kappa_t/dt); averaged over
the posterior it gives the marginal rate per position

    u_t^i(y, x_t) = kappa'_t / (1 - kappa_t) [ p(x_1^i = y | x_t) - delta_{x_t^i}(y) ],

so the network is a denoiser: clean-token logits of p(x_1^i | x_t) (seed: the posteriors w-hat).

Backbone. mask: tokens + 1 extra id, cond 'none' (the posterior given a masked sequence does not
depend on t: unmasked tokens are exact, masked ones carry no information whatever t, as in MDLM);
uniform: tokens, cond 't' (how much to trust an observed token depends on kappa_t).

Loss (`weighting`), per sequence divided by L, t stratified over the batch, clamped to [eps, 1 - eps]:
    ce   sum_i -log p_theta(x_1^i | x_t)  (seed's cross-entropy; mask source: masked positions only,
         since an unmasked position's posterior is delta_{x_t^i} and the sampler never reads it);
    gkl  the generalized KL between conditional and model rates, c = kappa'_t / (1 - kappa_t):
         sum_i c [ (1 - delta) (-log p_theta(x_1^i | x_t)) - p_theta(x_t^i | x_t) + delta ],
         delta = [x_t^i = x_1^i]; nonnegative, zero iff p_theta is the posterior, and its t-integral
         bounds -log p_theta(x_1) / L (the ELBO). Mask source: c * CE on masked positions.

Sampler `euler` on the grid t_k = k / nfe (h = 1 / nfe): one network call per step, then each
position jumps with probability p_k to a draw x_1^i ~ p_theta(x_1^i | x_t) (float64 categorical):
    step='rate'   p_k = min(1, h kappa'_{t_k} / (1 - kappa_{t_k}))   (the seed's Euler step,
                  X_{t+h} ~ delta_{X_t} + h u_t(., X_t));
    step='exact'  p_k = (kappa_{t_{k+1}} - kappa_{t_k}) / (1 - kappa_{t_k})   (the probability that the
                  conditional path leaves the source in [t_k, t_{k+1}] given it had not left it).
The last step jumps every position (p = 1), so the sample is a posterior draw. Uniform source: a
jump may land on the current token (the posterior keeps mass there), as the Euler step allows.
Mask source: only masked positions jump (the exact rate out of an unmasked token is zero).
For n = 1 both forms coincide: h / (1 - t_k). For n > 1 the rate form wastes the first step
(kappa'_0 = 0: nothing jumps); for n < 1 it jumps every position at t = 0 (kappa'_0 = inf): the
mask source then samples independent marginals at any NFE, and the uniform source treats those
marginal draws as kappa_h-informative observations (biased, over-confident samples whose NLL falls
below the entropy rate). `exact` has neither defect.

Relation to MDLM (baselines/mdlm.py). With source='mask' and n = 1 the path is MDLM's `loglinear`
forward process (kappa_t = t, the probability a token is unmasked), and the euler sampler equals
MDLM's ancestral sampler at every NFE (reveal probability h / (1 - t_k) = (kappa_{k+1} - kappa_k) /
(1 - kappa_k)). Both run the one masked path of flowbench/families/mixture.py (the mixture draw, the
masked evidence, the jump sampler): with step 'exact', or 'rate' at an NFE that is a power of two,
the same network and seed give MDLM's samples bit for bit (tests/families/test_dfm.py). They differ in the loss: MDLM weights the masked-token CE by its ELBO weight
kappa'_t / (1 - kappa_t) = 1 / (1 - t); DFM's default `ce` is the plain CE (no weight), and
`gkl` recovers MDLM's ELBO (up to the extra clamp t >= eps).

Recipe (docs/families.md, with its measurements): `evidence_head` on: for the uniform source the
network adds to log1p(V kappa / (1 - kappa)) at the observed token; for the mask source it pins
unmasked positions, which neither the loss nor the sampler reads.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from flowbench.backbone import BackboneSpec
from flowbench.families.base import Family, Params, SamplerParams, time_grid
from flowbench.families.mixture import (KappaT, jump_steps, last_step_jumps_all, leave_probabilities,
                                        masked_evidence, mix)
from flowbench.families.time_sampling import TimeSampling
from flowbench.registry import FAMILIES


class PolynomialScheduler:
    """kappa_t = t^n, kappa'_t = n t^(n - 1) (infinite at t = 0 when n < 1)."""

    def __init__(self, n: float):
        self.n = float(n)

    def __call__(self, t: torch.Tensor) -> KappaT:
        t = t.double()
        return KappaT(kappa=t ** self.n, d_kappa=self.n * t ** (self.n - 1))


class DFMParams(Params):
    """source: 'mask' (absorbing, MDLM's path at n = 1) or 'uniform' (x_0 uniform over V).
    n: exponent of kappa_t = t^n; 1 is the linear path of the DFM paper.
    weighting: 'ce' (the seed's plain cross-entropy) or 'gkl' (generalized KL, an ELBO).
    eps: t is clamped to [eps, 1 - eps] in the loss (the gkl weight diverges at t = 1)."""

    source: Literal["mask", "uniform"] = "mask"
    n: float = Field(1.0, gt=0)
    weighting: Literal["ce", "gkl"] = "ce"
    eps: float = Field(1e-3, gt=0, lt=0.5)
    # logits = network + the position's own evidence (base.EvidenceHead); for the uniform source
    # that is log1p(V kappa / (1 - kappa)) at the observed token (arXiv 2605.22765)
    evidence_head: bool = True
    time: TimeSampling = TimeSampling()  # training times (before the eps clamp)
    # probability that a training batch row reads the network's own first-pass estimate of x_1
    # (base.Family.self_conditioned; Plaid uses 0.25, CDCD 0.5); samplers always feed it back
    self_cond: float = Field(0.0, ge=0.0, le=1.0)


class EulerParams(SamplerParams):
    """step: 'rate' (the seed's Euler form, p = h kappa'_t / (1 - kappa_t)) or
    'exact' (p = (kappa_{t+h} - kappa_t) / (1 - kappa_t)); see the module docstring."""

    step: Literal["rate", "exact"] = "rate"


@FAMILIES.register("dfm")
class DFM(Family):
    Params = DFMParams
    samplers = {"euler": EulerParams}

    def __init__(self, **kw):
        super().__init__(**kw)
        self.scheduler = PolynomialScheduler(self.params.n)
        self.mask_id = self.vocab_size  # first id after the vocabulary (mask source only)

    @property
    def masked_source(self) -> bool:
        return self.params.source == "mask"

    def backbone_spec(self) -> BackboneSpec:
        sc = self.self_cond_rate > 0
        if self.masked_source:
            return BackboneSpec(cond="none", input="tokens", extra_tokens=1, self_cond=sc)
        return BackboneSpec(cond="t", input="tokens", self_cond=sc)

    # --- path ----------------------------------------------------------------------------
    def source_sample(self, shape: tuple[int, ...], *, generator: torch.Generator | None,
                      device) -> torch.Tensor:
        """x_0: all [MASK], or uniform ids over the vocabulary."""
        if self.masked_source:
            return torch.full(shape, self.mask_id, dtype=torch.long, device=device)
        return torch.randint(self.vocab_size, shape, generator=generator, device=device)

    def corrupt(self, x1: torch.Tensor, t: torch.Tensor, *, generator: torch.Generator | None = None,
                return_source: bool = False):
        """x_t ~ p_t(x | x_0, x_1) with x_0 from the source; x1 (B, L), t (B,).

        Returns x_t (B, L), and with return_source also the bool (B, L) of positions drawn from x_0."""
        kappa = self.scheduler(t).kappa.to(x1.device)[:, None]  # (B, 1) float64
        x_t, from_source = mix(x1, kappa, generator=generator, source=lambda: self.source_sample(
            tuple(x1.shape), generator=generator, device=x1.device))
        return (x_t, from_source) if return_source else x_t

    # --- training ------------------------------------------------------------------------
    def loss(self, model, x1, *, generator=None):
        B, L = x1.shape
        eps = self.params.eps
        t = self.params.time.sample(B, generator=generator, device=x1.device).clamp(eps, 1 - eps)  # (B,)
        x_t = self.corrupt(x1, t, generator=generator)
        log_p = F.log_softmax(self.self_conditioned(model, x_t, generator=generator, t=t).float(), dim=-1)
        nll = -log_p.gather(-1, x1[..., None]).squeeze(-1)  # (B, L)
        if self.masked_source:
            per_pos = nll * (x_t == self.mask_id)  # unmasked positions: posterior is delta_{x_t}
        elif self.params.weighting == "ce":
            per_pos = nll
        else:
            same = (x_t == x1).float()  # (B, L)
            p_xt = log_p.gather(-1, x_t[..., None]).squeeze(-1).exp()  # (B, L)
            per_pos = (1 - same) * nll - p_xt + same
        if self.params.weighting == "gkl":
            k = self.scheduler(t)
            per_pos = per_pos * (k.d_kappa / (1 - k.kappa)).float()[:, None]  # (B, 1) weight
        return per_pos.sum(1).mean() / L

    def training_floor_work(self, *, phase, x1, generator):
        """What a training step cannot skip besides its backbone pass (the cross-entropy is the bare
        step's): the corruption draw from the source (`corrupt`), (B, L)."""
        eps = self.params.eps
        t = self.params.time.sample(x1.shape[0], generator=generator, device=x1.device).clamp(eps, 1 - eps)
        return lambda: self.corrupt(x1, t, generator=generator)

    # --- sampling ------------------------------------------------------------------------
    def check_sampler(self, sampler, params):
        if sampler not in self.samplers:
            raise ValueError(f"dfm has no sampler {sampler!r} (allowed: {', '.join(self.samplers)})")

    def jump_probabilities(self, *, nfe: int, step: str) -> torch.Tensor:
        """p_k for k = 0..nfe-1 (float64, (nfe,)): probability that a position jumps in step k."""
        grid = time_grid(nfe)  # (nfe + 1,) float64, 0 -> 1
        k = self.scheduler(grid)
        if step == "exact":
            return leave_probabilities(k.kappa)
        h = 1.0 / nfe
        return last_step_jumps_all((h * k.d_kappa[:-1] / (1 - k.kappa[:-1])).clamp(max=1.0))

    @torch.no_grad()
    def sample(self, model, *, n, sampler, params, generator):
        self.check_sampler(sampler, params)
        model = self.sampling_model(model)
        device = generator.device
        x = self.source_sample((n, self.seq_len), generator=generator, device=device)  # (n, L)
        grid = time_grid(params.nfe).to(device)  # (nfe + 1,) float64
        p_jump = self.jump_probabilities(nfe=params.nfe, step=params.step).tolist()
        return jump_steps(lambda x, k: model(x, t=grid[k].expand(n)), x, p_jump, params=params,
                          generator=generator, mask_id=self.mask_id if self.masked_source else None)

    # --- oracle --------------------------------------------------------------------------
    def evidence(self, x_t, t=None):
        """log p(x_t^i | x_1^i = v), float64 (B, L, V).

        mask:    a masked position says nothing (0 for every v); an observed one pins v = x_t^i.
        uniform: log(kappa_t + (1 - kappa_t) / V) if v == x_t^i else log((1 - kappa_t) / V)."""
        B, L = x_t.shape
        V = self.vocab_size
        if self.masked_source:
            return masked_evidence(x_t, mask_id=self.mask_id, vocab_size=V)
        if t is None:
            raise ValueError("dfm with a uniform source needs t for its evidence")
        t = torch.as_tensor(t, device=x_t.device).expand(B)  # (B,)
        kappa = self.scheduler(t).kappa[:, None, None]  # (B, 1, 1) float64
        other = torch.log((1 - kappa) / V).expand(B, L, V).clone()  # (B, L, V)
        same = torch.log(kappa + (1 - kappa) / V).expand(B, L, 1)
        return other.scatter_(-1, x_t[..., None], same.clone())
