"""Inference-time reward guidance for the flow_map family (seed 003, section 9).

State and time as in flowbench.families.flow_map: x_0 ~ N(0, I) in R^{L x V}, grid
t_j = 1 - (1 - j/k)^p, j = 0..k. At each step from t = t_j to s = t_{j+1}:

  lookahead  x_s = X_{t,s}(x_t) + eta (s - t) P grad_{x_t} lambda r(delta_{t,tau}(x_t)),
             tau = t + horizon (1 - t). horizon = 1 is the seed's look-ahead, r(X_{t,1}(x_t)),
             X_{t,1} = delta_{t,1}: one backbone call with a backward, and the base jump X_{t,s}
             one more (on the last step s = 1 = tau and the look-ahead is the jump).
             horizon < 1 scores the mean denoiser over [t, tau], a simplex point (a convex
             combination of the path's denoisers) that is smooth in x_t: the exact X_{t,1}
             lands on a vertex of the simplex (the flow ends on data), a piecewise-constant
             function of x_t whose gradient vanishes almost everywhere. horizon -> 0 gives
             the tangent's end point D_t with the flow map's jumps.
  tangent    x_s = X^D_{t,s}(x_t) + eta (s - t) P grad_{x_t} lambda r(D_t(x_t)),
             X^D_{t,s}(x) = x + (s - t)(D_t(x) - x)/(1 - t) the Euler step of the diagonal flow
             and D_t = delta_{t,t} its local tangent's end point x_t + (1 - t) b_t(x_t): the same
             guidance without the look-ahead, one call with a backward per step.

P removes each position's mean over the V coordinates: no denoiser reads a per-position shift
of x_t (the exact delta ignores it), so that component would only move the state off the path's
support. x_t lives in R^{L x V}, where every point is a valid state, so no projection onto the
simplex is needed; the factor (s - t) makes eta a rate per unit time (the total push does not
grow with the NFE). The returned ids are the argmax of the final state x_1, which is the last
mean denoiser delta_{t_{k-1},1} when eta = 0, so with eta = 0 the lookahead method
reproduces the family's flow_map sampler (decode argmax) exactly and the tangent method its
euler sampler (to rounding: the same step written as a convex combination).

Cost in backbone passes (forward 1, backward 2, the trainer's convention): lookahead 4k - 1
(4k for horizon < 1),
tangent 3k, best-of-N N k (N unguided samples at k calls each, the one of highest reward kept).
"""
from __future__ import annotations

from typing import Callable, Literal

import torch

from flowbench.families.flow_map import FlowMap, grid_jump_, jump

Lookahead = Literal["lookahead", "tangent"]


def passes(method: str, *, nfe: int, n_best: int = 1, horizon: float = 1.0) -> int:
    """Backbone passes per sample of one method (module docstring)."""
    return {"lookahead": 4 * nfe - (horizon == 1), "tangent": 3 * nfe, "best_of_n": n_best * nfe,
            "base": nfe, "finetuned": nfe}[method]


def _delta(model, x: torch.Tensor, *, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """delta_{s,t}(x), the softmax taken in the state's dtype as FlowMap.sample does (float32
    for its flow_map sampler, float64 for its euler sampler)."""
    return model(x, s=s, t=t).to(x.dtype).softmax(-1)


def _reward_gradient(model, reward: Callable, x: torch.Tensor, *, t: torch.Tensor,
                     end: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """P grad_x lambda r(delta_{t,end}(x)) and delta_{t,end}(x) (detached): (n, L, V) each, in
    x's dtype (the reward itself is evaluated in float64)."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        d = _delta(model, xg, s=t, t=end)
        grad, = torch.autograd.grad(lam * reward(d.double()).sum(), xg)
    return grad - grad.mean(-1, keepdim=True), d.detach()


@torch.no_grad()
def guided_sample(family: FlowMap, model, *, n: int, nfe: int, eta: float, reward: Callable,
                  lam: float = 1.0, method: Lookahead = "lookahead", horizon: float = 1.0,
                  grid_power: float = 1.0,
                  generator: torch.Generator) -> torch.Tensor:
    """n guided samples (module docstring): token ids (n, L). Draws x_0 exactly as
    FlowMap.sample does, so one seed gives the unguided sample at eta = 0."""
    if not 0 < horizon <= 1:
        raise ValueError(f"guidance horizon must lie in (0, 1], got {horizon!r}")
    if method not in ("lookahead", "tangent"):
        raise ValueError(f"guidance method must be 'lookahead' or 'tangent', got {method!r}")
    dev = generator.device
    x = torch.randn(n, family.seq_len, family.vocab_size, generator=generator, device=dev)  # x_0 (n, L, V)
    times = family.grid(nfe, power=grid_power).to(dev)
    if method == "tangent":  # the euler sampler's float64 state
        x = x.double()
    for j in range(nfe):
        t, s = times[j].expand(n), times[j + 1].expand(n)
        step = float(times[j + 1] - times[j])
        if method == "lookahead":  # FlowMap.sample's float32 jump, then the reward's push
            end = torch.ones_like(t) if horizon == 1 else t + horizon * (1 - t)
            grad, x1 = _reward_gradient(model, reward, x, t=t, end=end, lam=lam)
            d = x1 if j == nfe - 1 and horizon == 1 else _delta(model, x, s=t, t=s)
            x = grid_jump_(x, d, times, j).add_(grad, alpha=eta * step)
        else:
            grad, d = _reward_gradient(model, reward, x, t=t, end=t, lam=lam)
            x = jump(x, delta=d, s=t, t=s) + eta * step * grad
    return x.argmax(-1)


@torch.no_grad()
def best_of_n(family: FlowMap, model, *, n: int, n_best: int, nfe: int, reward: Callable,
              generator: torch.Generator, **sampler) -> torch.Tensor:
    """For each of n outputs, n_best unguided flow_map samples, the one of highest reward on its
    token ids kept: ids (n, L). The n * n_best draws come in one batch per output block."""
    from flowbench.families.flow_map import FlowMapSamplerParams

    params = FlowMapSamplerParams(nfe=nfe, **sampler)
    ids = family.sample(model, n=n * n_best, sampler="flow_map", params=params, generator=generator)
    r = reward(torch.nn.functional.one_hot(ids, family.vocab_size).double()).view(n, n_best)
    keep = r.argmax(-1)                                                              # (n,)
    return ids.view(n, n_best, -1)[torch.arange(n, device=ids.device), keep]
