"""A roofline model of sampling on a GPU: time = max(FLOPs / peak, bytes / bandwidth) per call.

The CPU bench measures; this predicts what the same sampler costs on an accelerator, where AR
decoding is limited by memory traffic rather than arithmetic (seed 003, section 1). Counts are of
matmul FLOPs (2 per multiply-add) and of bytes that must cross HBM at least once per call: the
weights, the KV cache, and the (B, L, V) tensors a simplex family reads and writes. Everything
else (norms, softmax, kernel launches) is left out, so predictions are upper bounds on speed.

Backbone (per layer): qkv 3 d^2 + projection d^2 + MLP 2 r d^2 weights; the head V d; a simplex
input is a dense (V -> d) map per position (a token input is a lookup, no FLOPs). Attention does
4 S T d FLOPs per layer for T queries over S keys.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GPU:
    name: str
    peak_flops: float      # dense bf16 FLOP/s
    bandwidth: float       # HBM bytes/s

    @property
    def ridge(self) -> float:
        """Arithmetic intensity (FLOP/byte) above which a call is compute-bound."""
        return self.peak_flops / self.bandwidth


H100_SXM = GPU("H100 SXM (bf16 dense 989 TFLOP/s, HBM3 3.35 TB/s)", peak_flops=989e12, bandwidth=3.35e12)


@dataclass(frozen=True)
class Transformer:
    d: int
    layers: int
    vocab: int
    seq_len: int
    mlp_ratio: int = 4
    bytes_per_value: int = 2   # bf16 weights, activations and cache

    @property
    def block_params(self) -> int:
        return self.layers * (4 + 2 * self.mlp_ratio) * self.d ** 2

    @property
    def head_params(self) -> int:
        return self.vocab * self.d

    @property
    def params(self) -> int:
        """Weights: blocks, head and the input map (a token table or the dense simplex map, V d either way)."""
        return self.block_params + 2 * self.head_params

    # --- one call ------------------------------------------------------------------------
    def parallel_forward(self, batch: int) -> tuple[float, float]:
        """(FLOPs, bytes) of one bidirectional forward of `batch` sequences on the simplex input."""
        L, d = self.seq_len, self.d
        per_token = 2 * (self.block_params + 2 * self.head_params)   # blocks, head, dense input map
        flops = batch * L * (per_token + 4 * L * d * self.layers)
        weights = self.params * self.bytes_per_value
        io = 2 * batch * L * self.vocab * self.bytes_per_value       # read x (B, L, V), write logits
        acts = 2 * batch * L * d * self.layers * 8 * self.bytes_per_value  # block inputs/outputs, MLP
        return flops, weights + io + acts

    def decode_step(self, batch: int, cached: int) -> tuple[float, float]:
        """(FLOPs, bytes) of one KV-cached AR call: one new token per sequence over `cached` keys."""
        d = self.d
        flops = batch * (2 * (self.block_params + self.head_params) + 4 * (cached + 1) * d * self.layers)
        weights = (self.block_params + self.head_params) * self.bytes_per_value
        kv = batch * 2 * self.layers * (cached + 1) * d * self.bytes_per_value
        logits = batch * self.vocab * self.bytes_per_value
        return flops, weights + kv + logits


def call_seconds(flops: float, nbytes: float, gpu: GPU) -> float:
    return max(flops / gpu.peak_flops, nbytes / gpu.bandwidth)


def flow_map_samples_per_s(model: Transformer, gpu: GPU, *, batch: int, nfe: int) -> float:
    return batch / (nfe * call_seconds(*model.parallel_forward(batch), gpu))


def ar_samples_per_s(model: Transformer, gpu: GPU, *, batch: int) -> float:
    seconds = sum(call_seconds(*model.decode_step(batch, s), gpu) for s in range(model.seq_len))
    return batch / seconds


def prediction_table(model: Transformer, gpu: GPU, *, batches=(1, 16, 64, 256), nfes=(1, 2, 4)) -> list[dict]:
    """Samples/s of flow_map at each NFE over AR's, by batch size."""
    rows = []
    for b in batches:
        ar = ar_samples_per_s(model, gpu, batch=b)
        f, nb = model.decode_step(b, model.seq_len // 2)
        row = {"batch": b, "ar_samples_per_s": ar, "ar_step_intensity": f / nb}
        for k in nfes:
            row[f"flow_map_nfe{k}_over_ar"] = flow_map_samples_per_s(model, gpu, batch=b, nfe=k) / ar
        rows.append(row)
    return rows


# OWT-size run: L = 1024, GPT-2 vocabulary, d = 768 x 12 layers (about 170M parameters with the
# head and the input map; MDLM's DiT on OpenWebText has this shape)
OWT = Transformer(d=768, layers=12, vocab=50257, seq_len=1024)
