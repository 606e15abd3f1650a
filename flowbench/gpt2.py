"""Real GPT-2 (`transformers`' GPT2LMHeadModel) built from the suite's backbone sizes.

Shared by the autoregressive family and the `local` judge. One id after the vocabulary is BOS.

KV cache: a `transformers.DynamicCache` that the model extends in place at every call, passed as
`cache=` (its `past_key_values` name is deprecated and goes in transformers 5.40). pyproject.toml
allows transformers >= 5.24 (the first tested with this argument) and < 6 (the next major may
move the cache API again).
"""
from __future__ import annotations

import torch
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel

from flowbench.config import BackboneConfig


class GPT2(torch.nn.Module):
    """GPT2LMHeadModel whose call returns logits over the V real tokens (BOS never predicted).

    forward(input_ids (B, T), cache=None) -> (logits (B, T, V), cache): with a cache (a fresh
    `DynamicCache()` at the first call), input_ids are the tokens after those already cached, and
    the cache grows by T in place."""

    def __init__(self, config: GPT2Config, vocab_size: int):
        super().__init__()
        self.gpt2 = GPT2LMHeadModel(config)
        self.vocab_size = vocab_size

    def forward(self, input_ids, cache: DynamicCache | None = None):
        out = self.gpt2(input_ids=input_ids, use_cache=cache is not None, cache=cache)
        return out.logits[..., : self.vocab_size], cache


def gpt2_config(config: BackboneConfig, *, vocab_size: int, seq_len: int) -> GPT2Config:
    return GPT2Config(vocab_size=vocab_size + 1, n_positions=seq_len + 1, n_embd=config.d_model,
                      n_layer=config.n_layers, n_head=config.n_heads,
                      n_inner=config.mlp_ratio * config.d_model, resid_pdrop=config.dropout,
                      embd_pdrop=config.dropout, attn_pdrop=config.dropout,
                      bos_token_id=vocab_size, eos_token_id=vocab_size)
