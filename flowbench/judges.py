"""Judges score generated token ids: per-token NLL (N, M) and a mask of scored tokens.

exact       the embedded language's own likelihood: -log p(x_i | x_<i) for every i, first token
            included (scored under the language's prior); no re-tokenisation.
local       a GPT-2 the harness trains on the corpus's train split, larger and longer than the
            contestants, cached under a hash of its config and reused. Same tokenizer as the
            contestants; BOS-prefixed, so the first token is scored too.
gpt2-large  the hub's GPT-2 Large (GPU-sized). Samples are decoded to text and re-tokenised
            with the GPT-2 tokenizer; '<|endoftext|>' is prepended as context and every GPT-2
            token of the text is scored, so PPL is per GPT-2 token.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from flowbench.config import BackboneConfig, TrainConfig, config_hash
from flowbench.registry import JUDGES


class JudgeError(ValueError):
    pass


class Judge:
    name: str
    version: ClassVar[int] = 1  # bump when scores change: it enters the row key (flowbench/versions.py)

    def __init__(self, *, corpus, cache_dir: Path, device: torch.device, **params):
        self.corpus, self.cache_dir, self.device = corpus, Path(cache_dir), device
        if params:
            raise JudgeError(f"judge {self.name!r} takes no parameters {sorted(params)}")

    def score(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def floor(self) -> dict[str, float]:
        """What true data scores, where the judge knows it (the exact judge's entropy rate)."""
        return {}


@JUDGES.register("exact")
class ExactJudge(Judge):
    def __init__(self, **kw):
        super().__init__(**kw)
        if not getattr(self.corpus, "exact", False):
            raise JudgeError(f"judge 'exact' needs a corpus with a known likelihood; "
                             f"{self.corpus.name!r} has none (use judge: local)")

    def score(self, tokens):
        nll = self.corpus.token_nll(tokens.cpu())
        return nll, torch.ones_like(nll, dtype=torch.bool)

    def floor(self):
        h, se = self.corpus.entropy_rate()
        return {"entropy_rate": h, "entropy_rate_se": se, "ppl_floor": math.exp(h)}


class NextTokenLoss:
    """The judge's own training objective: BOS-prefixed next-token cross-entropy."""

    def __init__(self, bos: int):
        self.bos = bos

    def loss(self, model, x1, *, generator=None):
        inp = torch.cat([torch.full_like(x1[:, :1], self.bos), x1[:, :-1]], dim=1)
        return F.cross_entropy(model(inp)[0].float().transpose(1, 2), x1)


@JUDGES.register("local")
class LocalJudge(Judge):
    def __init__(self, *, corpus, cache_dir, device, d_model: int = 128, n_layers: int = 4,
                 n_heads: int = 4, steps: int = 4000, batch_size: int = 64, lr: float = 1e-3,
                 seed: int = 0, progress: bool = True):
        super().__init__(corpus=corpus, cache_dir=cache_dir, device=device)
        from flowbench.gpt2 import GPT2, gpt2_config
        from flowbench.trainer import train

        backbone = BackboneConfig(d_model=d_model, n_layers=n_layers, n_heads=n_heads)
        cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=min(200, steps // 10),
                          eval_every=max(1, steps // 4), checkpoint_every=max(1, steps // 4))
        meta = {"judge": "local", "corpus": corpus.describe(), "backbone": backbone.model_dump(),
                "train": cfg.model_dump(), "seed": seed}
        ckpt = self.cache_dir / "judges" / f"local-{config_hash(meta)}.pt"
        V = corpus.vocab_size
        self.model = GPT2(gpt2_config(backbone, vocab_size=V, seq_len=corpus.seq_len), V)
        n_train = corpus.available("train") or steps * batch_size
        state = train(family=NextTokenLoss(V), model=self.model,
                      train_data=corpus.split("train", n_train),
                      val_data=corpus.split("validation", min(512, corpus.available("validation") or 512)),
                      config=cfg, seed=seed, checkpoint=ckpt, meta={**meta, "label": "local judge"},
                      device=device, progress=progress)
        self.model.load_state_dict(state["weights"])
        self.model.to(device).eval()
        self.bos = V

    @torch.no_grad()
    def score(self, tokens):
        nll = []
        for chunk in tokens.split(256):
            chunk = chunk.to(self.device)
            nll.append(self._nll(chunk))
        nll = torch.cat(nll).double().cpu()
        return nll, torch.ones_like(nll, dtype=torch.bool)

    def _nll(self, x1):
        inp = torch.cat([torch.full_like(x1[:, :1], self.bos), x1[:, :-1]], dim=1)
        logits = self.model(inp)[0].float()
        return F.cross_entropy(logits.transpose(1, 2), x1, reduction="none")  # (B, L)


@JUDGES.register("gpt2-large")
class GPT2LargeJudge(Judge):
    hub_name = "gpt2-large"

    def __init__(self, *, corpus, cache_dir, device, batch_size: int = 8):
        super().__init__(corpus=corpus, cache_dir=cache_dir, device=device)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.hub_name)
            self.model = AutoModelForCausalLM.from_pretrained(self.hub_name).to(device).eval()
        except OSError as err:
            raise JudgeError(f"judge 'gpt2-large' could not load {self.hub_name!r} from the hub or its "
                             f"cache ({type(err).__name__}); use judge: exact or local offline") from None
        self.batch_size = batch_size

    @torch.no_grad()
    def score(self, tokens):
        texts = [self.corpus.decode(row) for row in tokens]
        eos = self.tokenizer.eos_token_id
        rows = [[eos] + self.tokenizer(t)["input_ids"][: self.model.config.n_positions - 1] for t in texts]
        M = max(len(r) for r in rows) - 1
        nll = torch.zeros(len(rows), M, dtype=torch.float64)
        mask = torch.zeros(len(rows), M, dtype=torch.bool)
        for i in range(0, len(rows), self.batch_size):
            batch = rows[i:i + self.batch_size]
            ids = torch.full((len(batch), M + 1), eos, dtype=torch.long)
            for j, r in enumerate(batch):
                ids[j, : len(r)] = torch.tensor(r)
                mask[i + j, : len(r) - 1] = True
            logits = self.model(ids.to(self.device)).logits[:, :-1].float()
            nll[i:i + len(batch)] = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:].to(self.device),
                                                    reduction="none").double().cpu()
        return nll, mask
