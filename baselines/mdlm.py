"""Masked discrete diffusion (MDLM, Sahoo et al. 2024): absorbing-state diffusion, SUBS.

Time convention. MDLM writes t = 1 for noise; flowbench uses t = 0 for noise, t = 1 for data.
Here kappa_t is the probability that a token is *unmasked* at time t (MDLM's alpha at 1 - t):

    q(x_t^i | x_1^i) = kappa_t delta_{x_1^i} + (1 - kappa_t) delta_{[MASK]},   kappa_0 = 0, kappa_1 = 1.

Schedules (`schedule`):
    loglinear  kappa_t = t                       (MDLM's default: sigma = -log(1 - t) in its time;
                                                  this is the path of DFM's mask source, kappa_t = t)
    linear     kappa_t = exp(-sigma(1 - t)),  sigma(u) = sigma_min + u (sigma_max - sigma_min)

SUBS parameterisation: the network gives logits over the V clean tokens only (the mask logit is
-inf by construction), and unmasked tokens are carried over unchanged.

Loss (continuous-time ELBO, MDLM eq. 10 in this time direction), per sequence, divided by L:

    E_t [ kappa'_t / (1 - kappa_t) * sum_{i: x_t^i = MASK} -log p_theta(x_1^i | x_t) ],

with t drawn by antithetic (low-discrepancy) sampling over the batch and clamped to
[0, 1 - eps] where the weight diverges.

Ancestral sampler with `nfe` steps on the grid t_k = k / nfe: a masked token is revealed
between t_k and t_{k+1} with probability (kappa_{k+1} - kappa_k) / (1 - kappa_k), its value drawn
from p_theta(x_1^i | x_t) in float64; the last step reveals every remaining token. The path, the
evidence and this sampler are those of dfm's mask source (flowbench/families/mixture.py); with the
loglinear schedule, dfm's at n = 1.
`ancestral_cached` reuses the previous network output when no token of the batch changed
(valid because the network is not conditioned on t); it spends fewer backbone calls.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from flowbench.backbone import BackboneSpec
from flowbench.families.base import Family, Params, SamplerParams, time_grid
from flowbench.families.mixture import KappaT, jump_steps, leave_probabilities, masked_evidence, mix
from flowbench.families.time_sampling import stratified_uniform
from flowbench.registry import FAMILIES


class LogLinearSchedule:
    """kappa_t = t."""

    def __call__(self, t: torch.Tensor) -> KappaT:
        return KappaT(kappa=t, d_kappa=torch.ones_like(t))


class LinearSigmaSchedule:
    """kappa_t = exp(-(sigma_min + (1 - t)(sigma_max - sigma_min))), MDLM's 'linear' noise."""

    def __init__(self, sigma_min: float = 1e-4, sigma_max: float = 20.0):
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def __call__(self, t: torch.Tensor) -> KappaT:
        sigma = self.sigma_min + (1 - t) * (self.sigma_max - self.sigma_min)
        kappa = torch.exp(-sigma)
        return KappaT(kappa=kappa, d_kappa=kappa * (self.sigma_max - self.sigma_min))


SCHEDULES = {"loglinear": LogLinearSchedule, "linear": LinearSigmaSchedule}


class MDLMParams(Params):
    # kappa_t: loglinear t (MDLM's default) or linear exp(-sigma(1 - t)) (module docstring)
    schedule: Literal["loglinear", "linear"] = "loglinear"
    eps: float = 1e-3  # t is clamped to [0, 1 - eps] in the loss


class AncestralParams(SamplerParams):
    pass


@FAMILIES.register("mdlm")
class MDLM(Family):
    Params = MDLMParams
    samplers = {"ancestral": AncestralParams, "ancestral_cached": AncestralParams}

    def __init__(self, **kw):
        super().__init__(**kw)
        self.schedule = SCHEDULES[self.params.schedule]()
        self.mask_id = self.vocab_size  # first id after the vocabulary

    def backbone_spec(self) -> BackboneSpec:
        return BackboneSpec(cond="none", input="tokens", extra_tokens=1)

    def corrupt(self, x1: torch.Tensor, t: torch.Tensor, *, generator=None) -> torch.Tensor:
        """x_t ~ q(x_t | x_1): each token kept with probability kappa_t, else masked. t: (B,)."""
        kappa = self.schedule(t.double()).kappa[:, None]  # (B, 1)
        return mix(x1, kappa, source=lambda: self.mask_id, generator=generator)[0]

    def loss(self, model, x1, *, generator=None):
        B, L = x1.shape
        # float32 times (as mdlm's models were trained), antithetic over the batch
        t = stratified_uniform(B, generator=generator, device=x1.device, dtype=torch.float32)
        t = t.clamp(max=1 - self.params.eps)
        x_t = self.corrupt(x1, t, generator=generator)
        logits = model(x_t)  # (B, L, V)
        nll = F.cross_entropy(logits.float().transpose(1, 2), x1, reduction="none")  # (B, L)
        k = self.schedule(t)
        weight = (k.d_kappa / (1 - k.kappa)).float()[:, None]  # (B, 1)
        return (weight * nll * (x_t == self.mask_id)).sum(1).mean() / L

    def training_floor_work(self, *, phase, x1, generator):
        """What a training step cannot skip besides its backbone pass (the cross-entropy is the bare
        step's): the masking draw (`corrupt`), (B, L)."""
        t = torch.rand(x1.shape[0], generator=generator, device=x1.device, dtype=torch.float64)
        t = t.clamp(max=1 - self.params.eps)
        return lambda: self.corrupt(x1, t, generator=generator)

    @torch.no_grad()
    def sample(self, model, *, n, sampler, params, generator):
        x = torch.full((n, self.seq_len), self.mask_id, dtype=torch.long, device=generator.device)
        p_reveal = leave_probabilities(self.schedule(time_grid(params.nfe)).kappa).tolist()  # (nfe,)
        # the network does not read t, so the cached sampler may reuse an unchanged step's output
        return jump_steps(lambda x, k: model(x), x, p_reveal, params=params, generator=generator,
                          mask_id=self.mask_id, reuse_unchanged=sampler == "ancestral_cached")

    def evidence(self, x_t, t=None):
        """A masked position says nothing (log-lik 0 for every v); an observed one pins v = x_t."""
        return masked_evidence(x_t, mask_id=self.mask_id, vocab_size=self.vocab_size)
