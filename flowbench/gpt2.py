"""Real GPT-2 (`transformers`' GPT2LMHeadModel) built from the suite's backbone sizes.

Shared by the autoregressive family and the `local` judge. One id after the vocabulary is BOS.
"""
from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from flowbench.config import BackboneConfig


class GPT2(torch.nn.Module):
    """GPT2LMHeadModel whose call returns logits over the V real tokens (BOS never predicted)."""

    def __init__(self, config: GPT2Config, vocab_size: int):
        super().__init__()
        self.gpt2 = GPT2LMHeadModel(config)
        self.vocab_size = vocab_size

    def forward(self, input_ids, past_key_values=None):
        out = self.gpt2(input_ids=input_ids, past_key_values=past_key_values,
                        use_cache=past_key_values is not None or not self.training)
        return out.logits[..., : self.vocab_size], out.past_key_values


def gpt2_config(config: BackboneConfig, *, vocab_size: int, seq_len: int) -> GPT2Config:
    return GPT2Config(vocab_size=vocab_size + 1, n_positions=seq_len + 1, n_embd=config.d_model,
                      n_layer=config.n_layers, n_head=config.n_heads,
                      n_inner=config.mlp_ratio * config.d_model, resid_pdrop=config.dropout,
                      embd_pdrop=config.dropout, attn_pdrop=config.dropout,
                      bos_token_id=vocab_size, eos_token_id=vocab_size)
