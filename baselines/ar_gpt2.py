"""Autoregressive GPT-2: next-token cross-entropy, KV-cache decoding.

The model is `transformers`' GPT2LMHeadModel built from a GPT2Config with the suite's width,
depth and heads, so it is real GPT-2. One extra id after the vocabulary is BOS: a sequence
x_1..x_L is fed as [BOS, x_1..x_{L-1}] and every x_i is a target, so the first token is scored.

Sampling decodes L tokens one at a time: NFE = L by definition. `kv_cache` feeds one new token per
call and keeps the keys and values of the earlier ones (a `transformers.DynamicCache`), so a call
costs one position's FLOPs; `full_prefix` re-reads the whole prefix at every call (no cache: the
cost a KV cache saves, measured by `python -m flowbench bench`). Both draw the same tokens from the
same generator, up to float rounding of the logits. Categorical draws (after temperature and
nucleus filtering) are made in float64.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from transformers import DynamicCache

from flowbench.config import BackboneConfig
from flowbench.gpt2 import GPT2, gpt2_config
from flowbench.backbone import BackboneSpec
from flowbench.families.base import Family, Params, SamplerParams, sample_categorical
from flowbench.registry import FAMILIES


class KVCacheParams(SamplerParams):
    nfe: int | None = None  # must equal L; None means L


@FAMILIES.register("ar_gpt2")
class ARGPT2(Family):
    samplers = {"kv_cache": KVCacheParams, "full_prefix": KVCacheParams}

    def backbone_spec(self) -> BackboneSpec:
        return BackboneSpec(causal=True, input="tokens", extra_tokens=1)

    def build_model(self, config: BackboneConfig) -> torch.nn.Module:
        return GPT2(gpt2_config(config, vocab_size=self.vocab_size, seq_len=self.seq_len), self.vocab_size)

    def loss(self, model, x1, *, generator=None):
        bos = torch.full_like(x1[:, :1], self.vocab_size)
        logits, _ = model(torch.cat([bos, x1[:, :-1]], dim=1))  # (B, L, V)
        return F.cross_entropy(logits.float().transpose(1, 2), x1)

    def check_sampler(self, sampler, params):
        if sampler not in self.samplers:
            raise ValueError(f"ar_gpt2 has no sampler {sampler!r} (samplers: {', '.join(self.samplers)})")
        if params.nfe is not None and params.nfe != self.seq_len:
            raise ValueError(f"ar_gpt2 decodes one token per call: nfe must equal seq_len={self.seq_len}, "
                             f"got {params.nfe}")

    @torch.no_grad()
    def sample(self, model, *, n, sampler, params, generator):
        self.check_sampler(sampler, params)
        device = generator.device
        seq = torch.full((n, self.seq_len + 1), self.vocab_size, dtype=torch.long, device=device)  # BOS, ...
        cache = DynamicCache() if sampler == "kv_cache" else None
        for i in range(self.seq_len):
            if cache is not None:
                logits, _ = model(seq[:, i:i + 1], cache=cache)  # (n, 1, V), the cache grows by one
            else:
                logits, _ = model(seq[:, :i + 1])                 # (n, i + 1, V), the whole prefix
            seq[:, i + 1] = sample_categorical(logits[:, -1].double(), generator=generator,
                                               temperature=params.temperature, top_p=params.top_p)
        return seq[:, 1:]
