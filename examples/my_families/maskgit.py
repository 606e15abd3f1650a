"""MaskGIT-style confidence decoding (Chang et al. 2022, arXiv 2202.04200), written outside the
package as an example of a family added with `--include`:

    python -m flowbench run my_suite.yaml --include examples/my_families

Training: mask a random fraction r ~ U(min_mask, 1) of the positions, cross-entropy on the masked
ones. Sampling from all-[MASK]: at each of `nfe` steps draw every masked token, keep the most
confident draws and re-mask the rest, so that a fraction schedule((k + 1) / nfe) stays masked.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from flowbench.backbone import BackboneSpec
from flowbench.families.base import Family, Params, SamplerParams, sample_categorical
from flowbench.registry import FAMILIES


class MaskGITParams(Params):
    min_mask: float = Field(0.0, ge=0.0, lt=1.0, description="smallest masked fraction drawn in training")


class ConfidenceParams(SamplerParams):
    schedule: Literal["cosine", "linear"] = Field(
        "cosine", description="masked fraction after step k: cos(pi/2 k/nfe) or 1 - k/nfe")


@FAMILIES.register("maskgit")
class MaskGIT(Family):
    Params = MaskGITParams
    samplers = {"confidence": ConfidenceParams}
    version = 1  # bump when a change alters results: the next run retrains it and recomputes its rows

    def backbone_spec(self) -> BackboneSpec:
        return BackboneSpec(cond="none", input="tokens", extra_tokens=1)  # id V is [MASK]

    def loss(self, model, x1, *, generator=None):
        rate = self.params.min_mask + (1 - self.params.min_mask) * torch.rand(
            x1.shape[0], 1, generator=generator, device=x1.device)
        masked = torch.rand(x1.shape, generator=generator, device=x1.device) < rate   # (B, L)
        nll = F.cross_entropy(model(torch.where(masked, self.vocab_size, x1)).float().transpose(1, 2),
                              x1, reduction="none")
        return (nll * masked).sum() / masked.sum().clamp_min(1)

    @torch.no_grad()
    def sample(self, model, *, n, sampler, params, generator):
        L, mask_id = self.seq_len, self.vocab_size
        x = torch.full((n, L), mask_id, dtype=torch.long, device=generator.device)
        for k in range(1, params.nfe + 1):
            logp = model(x).double().log_softmax(-1)                                    # (n, L, V)
            draw = sample_categorical(logp, generator=generator)
            confidence = logp.gather(-1, draw[..., None])[..., 0].masked_fill(x != mask_id, math.inf)
            frac = math.cos(math.pi / 2 * k / params.nfe) if params.schedule == "cosine" else 1 - k / params.nfe
            keep = L - math.floor(L * frac)  # positions decided after this step
            chosen = torch.zeros_like(x, dtype=torch.bool).scatter_(
                1, confidence.argsort(-1, descending=True)[:, :keep], True)
            x = torch.where(chosen & (x == mask_id), draw, x)
        return x
