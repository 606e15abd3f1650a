"""The one transformer used by every non-AR family.

Bidirectional (or causal) attention, adaLN conditioning on nothing / t / (s, t) as in DiT,
and a token-id or simplex (L x V) input. Output: per-position logits over the vocabulary.

Positions are rotary by default (RoPE, Su et al. 2021, as in MDLM's DiT): q and k of every head
are rotated by an angle proportional to the position, so attention scores depend on relative
offsets directly. Measured on the embedded language (L=32, d=64 x 3 layers, 1500 steps): with
learned absolute position embeddings, the masked-diffusion denoiser's cross-entropy stayed at about 4.0 nats
whatever the fraction of visible context (val ELBO 4.08, exact denoiser 2.89): the network found
the topic but not its neighbours. With rotary positions the ELBO reached 3.10.

Precision: under bf16 autocast the matmuls run in bf16, but the residual stream stays in the
weights' dtype (fp32) for both input kinds. An nn.Embedding returns fp32 under autocast while the
simplex input's nn.Linear returns bf16, so the embedding output is cast to the weights' dtype:
otherwise simplex families would add their residuals in bf16 and token families in fp32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from flowbench.config import BackboneConfig


@dataclass(frozen=True)
class BackboneSpec:
    """What a family needs from the shared backbone.

    causal:       causal attention mask (else bidirectional).
    cond:         'none', 't' or 'st' (adaLN conditioning on nothing, t, or (s, t)).
    input:        'tokens' (ids, with `extra_tokens` ids after the vocabulary, e.g. a mask)
                  or 'simplex' (an L x V float input through a linear map: probabilities or logits).
    self_cond:    the network also reads its previous estimate of x_1 (`x1_hat=`, (B, L, V)).
    """

    causal: bool = False
    cond: Literal["none", "t", "st"] = "none"
    input: Literal["tokens", "simplex"] = "tokens"
    extra_tokens: int = 0
    self_cond: bool = False


def timestep_frequencies(dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """The dim / 2 frequencies of the sinusoidal time embedding: (dim / 2,) float32."""
    half = dim // 2
    return torch.exp(-math.log(max_period) * torch.arange(half) / half)


def timestep_embedding(times: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Sinusoidal embedding of each time in [0, 1], [cos, sin] per time: (K, B) -> (B, K * 2 freqs)."""
    args = 1000.0 * times.float()[..., None] * freqs  # (K, B, F); scaled so [0, 1] spans many periods
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)                   # (K, B, 2F)
    return emb.transpose(0, 1).flatten(1)


class TimeEmbedding(nn.Module):
    """(B,) times -> (B, C) conditioning vector; one sinusoid per time for (s, t)."""

    def __init__(self, d_model: int, n_times: int):
        super().__init__()
        self.freq_dim = 128
        self.register_buffer("freqs", timestep_frequencies(self.freq_dim), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(n_times * self.freq_dim, d_model), nn.SiLU(),
                                 nn.Linear(d_model, d_model))

    def forward(self, *times: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(torch.stack([t.float() for t in times]), self.freqs))


def rotary_tables(seq_len: int, head_dim: int, *, device, base: float = 10_000.0):
    """cos and signed sin of the RoPE angles i * base^(-2j/head_dim), each repeated for the pair it
    turns (x_2j, x_2j+1): (L, head_dim) each; the sin is -sin at 2j and +sin at 2j+1 (`rotate`)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.arange(seq_len, device=device, dtype=torch.float32)[:, None] * inv_freq[None]
    sign = torch.tensor([-1.0, 1.0], device=device).repeat(head_dim // 2)
    return angles.cos().repeat_interleave(2, -1), angles.sin().repeat_interleave(2, -1) * sign


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs (x_2j, x_2j+1) of x (..., L, Dh) by the position's angle:
    (x_2j cos - x_2j+1 sin, x_2j+1 cos + x_2j sin) = x cos + (x_2j+1, x_2j) (-sin, sin), with the
    signed sin of `rotary_tables`.

    On a contiguous copy of x: q and k arrive as strided views of the fused qkv projection, and
    elementwise products over that layout cost about 4x more on the CPU (the bench). Swapping the
    pairs with a flip of the (Dh/2, 2) view and putting the sign in the table gives the same
    numbers as negating and stacking the halves, in about 0.7x the time."""
    x = x.contiguous()
    if cos.dtype != x.dtype:  # under autocast
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)                  # (x_2j+1, x_2j) pairs
    return x * cos + swapped * sin


class Block(nn.Module):
    """Pre-LN transformer block; with conditioning, LayerNorm shift/scale and residual gates
    come from c (adaLN-Zero: gates start at zero so a fresh block is the identity).

    Without conditioning the shift, scale and gates are left out rather than applied as 0 and 1:
    the same numbers, fewer calls (a forward at batch 1 is bound by its number of calls)."""

    def __init__(self, config: BackboneConfig, *, causal: bool, conditioned: bool):
        super().__init__()
        d, self.n_heads, self.causal = config.d_model, config.n_heads, causal
        self.ln1 = nn.LayerNorm(d, elementwise_affine=not conditioned)
        self.ln2 = nn.LayerNorm(d, elementwise_affine=not conditioned)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, config.mlp_ratio * d), nn.GELU(approximate="tanh"),
                                 nn.Linear(config.mlp_ratio * d, d))
        self.dropout = nn.Dropout(config.dropout)
        self.ada = None
        if conditioned:
            self.ada = nn.Linear(d, 6 * d)
            nn.init.zeros_(self.ada.weight)
            nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None, rope: tuple | None) -> torch.Tensor:
        """x (B, L, D); c the conditioning (B, D), or None."""
        B, L, D = x.shape
        h = self.ln1(x)
        if self.ada is not None:
            # SiLU per block, not once for all: the gradient's summation order is the trained models'
            shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(F.silu(c))[:, None].chunk(6, -1)
            h = h * (1 + scale1) + shift1
        qkv = self.qkv(h).view(B, L, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv                                                     # (B, H, L, D/H) each
        if rope is not None:
            q, k = rotate(qkv[:2], *rope)                                 # q and k in one pass
        h = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)  # (B, H, L, D/H)
        h = self._dropout(self.proj(h.transpose(1, 2).reshape(B, L, D)))
        x = x + (gate1 * h if self.ada is not None else h)
        h = self.ln2(x)
        if self.ada is not None:
            h = h * (1 + scale2) + shift2
        h = self._dropout(self.mlp(h))
        return x + (gate2 * h if self.ada is not None else h)

    def _dropout(self, h: torch.Tensor) -> torch.Tensor:
        # skipped when it is the identity: at batch 1 a module call is a visible share of a forward
        return self.dropout(h) if self.training and self.dropout.p > 0 else h


class Backbone(nn.Module):
    """x (B, L) ids or (B, L, V) floats, optional t and s (B,) and self-conditioning estimate
    x1_hat (B, L, V) -> logits (B, L, V)."""

    def __init__(self, *, spec: BackboneSpec, config: BackboneConfig, vocab_size: int, seq_len: int):
        super().__init__()
        self.spec, d = spec, config.d_model
        if spec.input == "tokens":
            self.embed = nn.Embedding(vocab_size + spec.extra_tokens, d)
        else:
            self.embed = nn.Linear(vocab_size, d, bias=False)
        # self-conditioning: the previous estimate of x_1 (B, L, V) through a map that starts at
        # zero, so a zero estimate (or none) leaves the plain network's output unchanged
        self.self_cond = nn.Linear(vocab_size, d, bias=False) if spec.self_cond else None
        if self.self_cond is not None:
            nn.init.zeros_(self.self_cond.weight)
        self.pos = None
        if config.positions == "rotary":  # fixed tables, built once: (L, head_dim) each
            cos, sin = rotary_tables(seq_len, d // config.n_heads, device="cpu")
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        else:
            self.pos = nn.Parameter(0.02 * torch.randn(seq_len, d))
        conditioned = spec.cond != "none"
        self.time = TimeEmbedding(d, 2 if spec.cond == "st" else 1) if conditioned else None
        self.blocks = nn.ModuleList(Block(config, causal=spec.causal, conditioned=conditioned)
                                    for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(d, elementwise_affine=not conditioned)
        self.ada_f = nn.Linear(d, 2 * d) if conditioned else None
        if self.ada_f is not None:
            nn.init.zeros_(self.ada_f.weight)
            nn.init.zeros_(self.ada_f.bias)
        self.head = nn.Linear(d, vocab_size)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None,
                s: torch.Tensor | None = None, x1_hat: torch.Tensor | None = None) -> torch.Tensor:
        if self.spec.input == "simplex" and x.dtype != self.embed.weight.dtype:
            x = x.to(self.embed.weight.dtype)
        L = x.shape[1]
        h = self.embed(x)                                      # (B, L, C)
        if h.dtype != self.head.weight.dtype:  # one residual dtype for both inputs
            h = h.to(self.head.weight.dtype)
        if x1_hat is not None:
            if self.self_cond is None:
                raise ValueError("this backbone was built without self-conditioning (BackboneSpec.self_cond)")
            h = h + self.self_cond(x1_hat.to(h.dtype))
        rope = None
        if self.pos is not None:
            h = h + self.pos[:L]
        else:
            rope = (self.rope_cos[:L], self.rope_sin[:L])
        c = None
        if self.time is not None:
            if t is None or (self.spec.cond == "st" and s is None):
                raise ValueError(f"backbone conditioned on {self.spec.cond!r} needs those times")
            c = self.time(t) if self.spec.cond == "t" else self.time(s, t)  # (B, C)
        for block in self.blocks:
            h = block(h, c, rope)
        h = self.ln_f(h)
        if self.ada_f is not None:
            shift, scale = self.ada_f(F.silu(c))[:, None].chunk(2, -1)
            h = h * (1 + scale) + shift
        return self.head(h)  # (B, L, V)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
