"""The per-position mixture path of dfm and mdlm: its scheduler value, the masked evidence and the
jump sampler, written once for both.

Per position i, with a source token x_0^i and a scheduler kappa_t (kappa_0 = 0, kappa_1 = 1),

    p_t(x^i | x_0, x_1) = (1 - kappa_t) delta_{x_0^i}(x^i) + kappa_t delta_{x_1^i}(x^i).

With x_0^i = [MASK] (the absorbing path: dfm's mask source, and mdlm, whose kappa_t is the
probability that a token is unmasked) a masked position says nothing about x_1^i and an observed
one is x_1^i. The samplers walk a time grid t_0 < ... < t_K: at step k every position (every
masked one, on the absorbing path) jumps with probability p_k to a draw from the denoiser's
p(x_1^i | x_t), in float64 (`base.sample_categorical`). The probability that the path leaves its
source in [t_k, t_{k+1}], given it had not left it, is

    p_k = (kappa_{k+1} - kappa_k) / (1 - kappa_k),

and the last step jumps every position still at its source (p_{K-1} = 1), so a sample ends on
posterior draws whatever the scheduler's endpoint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from flowbench.families.base import SamplerParams, sample_categorical


@dataclass(frozen=True)
class KappaT:
    kappa: torch.Tensor    # weight of the data x_1 in the mixture at t (masked path: P(unmasked))
    d_kappa: torch.Tensor  # its time derivative


def mix(x1: torch.Tensor, kappa: torch.Tensor, *, source: Callable[[], torch.Tensor | int],
        generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t ~ p_t(x | x_0, x_1): x1 (B, L), kappa (B, 1) float64; source() gives x_0 ((B, L) ids, or
    one id for every position), called after the position's coin is drawn.

    Returns x_t (B, L) and the bool (B, L) of positions drawn from the source."""
    from_source = torch.rand(x1.shape, generator=generator, device=x1.device,
                             dtype=torch.float64) >= kappa                        # (B, L)
    return torch.where(from_source, source(), x1), from_source


def leave_probabilities(kappa: torch.Tensor) -> torch.Tensor:
    """p_k = (kappa_{k+1} - kappa_k) / (1 - kappa_k) for kappa on a grid of K + 1 times (float64),
    the last one 1: (K,)."""
    p = (kappa[1:] - kappa[:-1]) / (1 - kappa[:-1])
    return last_step_jumps_all(p)


def last_step_jumps_all(p: torch.Tensor) -> torch.Tensor:
    """Jump probabilities p (K,) cut to [0, 1] (an undefined 0/0 or x/0 jumps), the last one 1."""
    p = p.nan_to_num(nan=1.0, posinf=1.0).clamp(0.0, 1.0)
    p[-1] = 1.0
    return p


def masked_evidence(x_t: torch.Tensor, *, mask_id: int, vocab_size: int) -> torch.Tensor:
    """log p(x_t^i | x_1^i = v) on the absorbing path, float64 (B, L, V): 0 for every v at a
    masked position (it says nothing), 0 at v = x_t^i and -inf elsewhere at an observed one."""
    B, L = x_t.shape
    ev = torch.full((B, L, vocab_size), -math.inf, dtype=torch.float64, device=x_t.device)
    observed = x_t != mask_id
    ev[~observed] = 0.0
    ev[observed, x_t[observed]] = 0.0
    return ev


def jump_steps(denoise: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor,
               p_jump: Sequence[float], *, params: SamplerParams, generator: torch.Generator,
               mask_id: int | None = None, reuse_unchanged: bool = False) -> torch.Tensor:
    """K = len(p_jump) jump steps from x (n, L): at step k, logits = denoise(x, k) (n, L, V); every
    position (with mask_id: every one still masked) jumps with probability p_jump[k] to a draw
    from the logits at the sampler's temperature and top_p.

    reuse_unchanged: call denoise again only after a step that changed a token (exact only when
    the denoiser does not read the time; it costs one host read of the jumps per step)."""
    logits, changed = None, True
    for k, p in enumerate(p_jump):
        if logits is None or changed or not reuse_unchanged:
            logits = denoise(x, k)                                                 # (n, L, V)
        jump = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float64) < p
        if mask_id is not None:
            jump &= x == mask_id
        draw = sample_categorical(logits, generator=generator, temperature=params.temperature,
                                  top_p=params.top_p, only=jump)                   # (n, L); -1 where none
        x = torch.where(jump, draw, x)
        if reuse_unchanged:
            changed = bool(jump.any())
    return x
