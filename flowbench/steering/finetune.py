"""Reward fine-tuning through the flow map (seed 003, section 8).

Starting from a trained flow_map network (the base, kept frozen as the reference), maximise

    J(theta) = E[lambda r(X^theta_{t,1}(x_t))] - beta D(theta),

    D(theta) = E[ sum_l KL(delta^theta_{t,1}(x_t)_l || delta^base_{t,1}(x_t)_l)
                 + sum_l KL(delta^theta_{t,t'}(x_t)_l || delta^base_{t,t'}(x_t)_l) ],

with t = t_j, t' = t_{j+1} a step of the sampler's grid (j uniform in 0..k-1) and x_t reached by
the fine-tuned sampler's own jumps from x_0 ~ N(0, I) without gradient. The reward reaches theta
through the look-ahead X_{t,1} = delta_{t,1} (one differentiable call, seed: "back-propagate
through this map"); the divergence is a per-token, per-jump KL to the base's mean denoisers on
the same states (an upper-bound-style surrogate of KL(rho_theta || rho_1), not that KL itself:
the endpoint law of a flow has no tractable density here). It keeps the jumps the sampler uses
near the base, where the reward term alone collapses onto a few high-reward outputs.

After fine-tuning the network is sampled without guidance by FlowMap.sample (flow_map sampler).
Cost per step in backbone passes: j (roll-out) + 2 (tuned, with gradient) + 4 (their backward)
+ 2 (base): returned as `passes` beside the steps.
"""
from __future__ import annotations

import copy

import torch
from pydantic import Field, PositiveInt

from flowbench.config import Frozen
from flowbench.families.flow_map import FlowMap, jump


class FinetuneConfig(Frozen):
    steps: PositiveInt = 100
    batch_size: PositiveInt = 32
    lr: float = Field(1e-4, gt=0)
    beta: float = Field(1.0, ge=0)  # weight of the divergence D
    grad_clip: float = Field(1.0, gt=0)


def _kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """sum over positions of KL(softmax p || softmax q) per token: (B, L, V) -> (B,)."""
    lp, lq = logits_p.double().log_softmax(-1), logits_q.double().log_softmax(-1)
    return (lp.exp() * (lp - lq)).sum((-1, -2))


def finetune(family: FlowMap, model: torch.nn.Module, *, reward, lam: float, nfe: int,
             config: FinetuneConfig, seed: int, grid_power: float = 1.0) -> tuple[torch.nn.Module, dict]:
    """A fine-tuned copy of `model` (the module docstring's objective) and a summary dict."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    base = copy.deepcopy(model).eval().requires_grad_(False)
    tuned = copy.deepcopy(model).train().requires_grad_(True)
    opt = torch.optim.AdamW(tuned.parameters(), lr=config.lr, weight_decay=0.0)
    times = family.grid(nfe, power=grid_power)
    B, passes, history = config.batch_size, 0, []
    for _ in range(config.steps):
        x = torch.randn(B, family.seq_len, family.vocab_size, generator=gen, dtype=torch.float64)
        j = int(torch.randint(nfe, (1,), generator=gen))
        with torch.no_grad():
            for i in range(j):
                t, s = times[i].expand(B), times[i + 1].expand(B)
                x = jump(x, delta=tuned(x, s=t, t=s).double().softmax(-1), s=t, t=s)
        t, s, one = times[j].expand(B), times[j + 1].expand(B), torch.ones(B, dtype=torch.float64)
        end = tuned(x, s=t, t=one)                                                 # (B, L, V)
        r = reward(end.double().softmax(-1))                                       # (B,)
        with torch.no_grad():
            base_end = base(x, s=t, t=one)
            base_step = base_end if j == nfe - 1 else base(x, s=t, t=s)
        div = _kl(end, base_end)
        if j < nfe - 1:
            div = div + _kl(tuned(x, s=t, t=s), base_step)
        loss = -(lam * r).mean() + config.beta * div.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tuned.parameters(), config.grad_clip)
        opt.step()
        passes += j + 3 * (1 if j == nfe - 1 else 2) + (1 if j == nfe - 1 else 2)
        history.append((float(r.mean().detach()), float(div.mean().detach())))
    last = history[-max(1, len(history) // 10):]
    return tuned.eval(), {"ft_passes": passes,
                          "ft_reward_end": sum(h[0] for h in last) / len(last),
                          "ft_div_end": sum(h[1] for h in last) / len(last)}
