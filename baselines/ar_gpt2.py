"""Autoregressive GPT-2: next-token cross-entropy, KV-cache decoding.

The model is `transformers`' GPT2LMHeadModel built from a GPT2Config with the suite's width,
depth and heads, so it is real GPT-2. One extra id after the vocabulary is BOS: a sequence
x_1..x_L is fed as [BOS, x_1..x_{L-1}] and every x_i is a target, so the first token is scored.

Sampling decodes L tokens one at a time with the KV cache: NFE = L by definition.
Categorical draws (after temperature and nucleus filtering) are made in float64.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from flowbench.config import BackboneConfig
from flowbench.gpt2 import GPT2, gpt2_config
from flowbench.families.base import BackboneSpec, Family, Params, SamplerParams, sample_categorical, top_p_filter  # noqa: F401
from flowbench.registry import FAMILIES


class KVCacheParams(SamplerParams):
    nfe: int | None = None  # must equal L; None means L


@FAMILIES.register("ar_gpt2")
class ARGPT2(Family):
    samplers = {"kv_cache": KVCacheParams}

    def backbone_spec(self) -> BackboneSpec:
        return BackboneSpec(causal=True, input="tokens", extra_tokens=1)

    def build_model(self, config: BackboneConfig) -> torch.nn.Module:
        return GPT2(gpt2_config(config, vocab_size=self.vocab_size, seq_len=self.seq_len), self.vocab_size)

    def loss(self, model, x1, *, generator=None):
        bos = torch.full_like(x1[:, :1], self.vocab_size)
        logits, _ = model(torch.cat([bos, x1[:, :-1]], dim=1))  # (B, L, V)
        return F.cross_entropy(logits.float().transpose(1, 2), x1)

    def check_sampler(self, sampler, params):
        if params.nfe is not None and params.nfe != self.seq_len:
            raise ValueError(f"ar_gpt2 decodes one token per call: nfe must equal seq_len={self.seq_len}, "
                             f"got {params.nfe}")

    @torch.no_grad()
    def sample(self, model, *, n, sampler, params, generator):
        device = generator.device
        tokens = torch.full((n, 1), self.vocab_size, dtype=torch.long, device=device)  # BOS
        past, out = None, []
        for _ in range(self.seq_len):
            logits, past = model(tokens, past_key_values=past)  # (n, 1, V), cache grows by one
            tokens = sample_categorical(logits[:, -1].double(), generator=generator,
                                        temperature=params.temperature, top_p=params.top_p)[:, None]
            out.append(tokens)
        return torch.cat(out, dim=1)
