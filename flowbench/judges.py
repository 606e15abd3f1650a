"""Judges score generated token ids: per-token NLL (N, M) and a mask of scored tokens.

exact       the embedded language's own likelihood: -log p(x_i | x_<i) for every i, first token
            included (scored under the language's prior); no re-tokenisation.
local       a GPT-2 the harness trains on the corpus's train split, larger and longer than the
            contestants, cached under a hash of its config and reused. Same tokenizer as the
            contestants; BOS-prefixed, so the first token is scored too. It trains once: under a
            lock beside its checkpoint (a second process needing it waits, then loads), on one
            thread whichever process trains it, and a run gives its training a job of its own
            beside the contestants' (`Judge.ready`). Its held-out perplexity (exp of its final
            validation loss) is every row's `judge_ppl`.
gpt2-large  the hub's GPT-2 Large (GPU-sized), in float32, at a pinned revision (`revision`,
            part of every row key), downloaded into the flowbench cache. Samples are decoded
            to text and re-tokenised with its GPT-2 tokenizer; '<|endoftext|>' is prepended as
            context and every GPT-2 token of the text is scored, so PPL is per GPT-2 token.

A judge's keyword arguments come from the suite's `eval.judge_params`; `pinned` holds the
defaults that decide its scores, which enter the row key with the given parameters.
"""
from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from flowbench.config import BackboneConfig, TrainConfig, config_hash
from flowbench.locks import locked
from flowbench.registry import JUDGES
from flowbench.trainer import CheckpointError, load_checkpoint, resolve_precision


class JudgeError(ValueError):
    pass


class Judge:
    name: str
    version: ClassVar[int] = 1  # bump when scores change: it enters the row key (flowbench/versions.py)
    pinned: ClassVar[dict] = {}  # defaults that decide the scores (a hub revision): part of row keys
    floor_pool: ClassVar[int | None] = None  # true sequences a floor may score, in multiples of N (None: all)
    held_out_ppl: float | None = None  # its own perplexity on held-out text (the `judge_ppl` column), if any

    def __new__(cls, *args, **kwargs):
        judge = super().__new__(cls)
        judge.made_with = kwargs  # every keyword it was made with, for describe()
        return judge

    def __init__(self, *, corpus, cache_dir: Path, device: torch.device, **params):
        self.corpus, self.cache_dir, self.device = corpus, Path(cache_dir), device
        if params:
            raise JudgeError(f"judge {self.name!r} takes no parameters {sorted(params)}")

    @classmethod
    def check_params(cls, params: dict) -> None:
        """Fail before any training on a parameter the judge does not take (eval.judge_params)."""
        own = [p.name for p in inspect.signature(cls.__init__).parameters.values()
               if p.kind is p.KEYWORD_ONLY and p.name not in ("corpus", "cache_dir", "device")]
        unknown = sorted(set(params) - set(own))
        if unknown:
            raise JudgeError(f"eval.judge_params: judge {cls.name!r} takes no parameter {unknown[0]!r} "
                             f"(allowed: {', '.join(own) or 'none'})")

    @classmethod
    def ready(cls, *, corpus, cache_dir: Path, device, **params) -> bool:
        """Whether making the judge now would train nothing: always, but for a judge made by training
        (the local one) that is not in the cache yet; a run then trains it in a job of its own."""
        return True

    def score(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def describe(self) -> dict:
        """What decides this judge's scores: its class, version and pinned defaults, the keywords it
        was made with (the corpus by its own describe()); two judges that describe alike score alike."""
        made_with = {k: (v.describe() if k == "corpus" else str(v)) for k, v in self.made_with.items()}
        return {"judge": self.name, "class": f"{type(self).__module__}.{type(self).__qualname__}",
                "version": self.version, "pinned": self.pinned, **made_with}


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


class NextTokenLoss:
    """The judge's own training objective: BOS-prefixed next-token cross-entropy."""

    train_cost = 1.0  # one forward + backward per step (the trainer reads it to count steps)

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

        backbone, cfg, meta, ckpt = self.training(corpus=corpus, cache_dir=self.cache_dir, device=device,
                                                  d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                                                  steps=steps, batch_size=batch_size, lr=lr, seed=seed)
        V = corpus.vocab_size
        # its initial weights follow from its key (seed included), not from whatever this process
        # drew before: a judge trained by another job, or after other work, is the same judge
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = GPT2(gpt2_config(backbone, vocab_size=V, seq_len=corpus.seq_len), V)
        n_train = corpus.available("train") or steps * batch_size
        self.steps_trained = 0  # optimiser steps this process ran (0: it loaded the judge another trained)

        def count(step, total, seconds):
            self.steps_trained += 1

        def say(holder: str) -> None:
            print(f"{ckpt.stem}: the local judge is being trained by pid {holder}; waiting for it", flush=True)

        threads = torch.get_num_threads()
        torch.set_num_threads(cfg.threads)  # its checkpoint says so, whichever job trains it
        try:
            with locked(ckpt.with_suffix(".lock"), on_wait=say):  # one trainer; the others wait, then load
                state = train(family=NextTokenLoss(V), model=self.model,
                              train_data=corpus.split("train", n_train),
                              val_data=corpus.split("validation", min(512, corpus.available("validation") or 512)),
                              config=cfg, seed=seed, checkpoint=ckpt, meta={**meta, "label": "local judge"},
                              device=device, progress=progress, on_step=count, alone=True)
        finally:
            torch.set_num_threads(threads)
        self.model.load_state_dict(state["weights"])
        self.model.to(device).eval()
        self.bos = V
        history = state["history"]
        self.held_out_ppl = math.exp(history[-1]["val_loss"]) if history else None

    @staticmethod
    def training(*, corpus, cache_dir: Path, device, d_model, n_layers, n_heads, steps, batch_size, lr, seed):
        """(backbone, train config, checkpoint meta, checkpoint path) of the judge these parameters make."""
        backbone = BackboneConfig(d_model=d_model, n_layers=n_layers, n_heads=n_heads)
        cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=min(200, steps // 10),
                          eval_every=max(1, steps // 4), checkpoint_every=max(1, steps // 4))
        # device and precision, as in a contestant's key: a CPU fp32 judge is not a GPU bf16 one
        meta = {"judge": "local", "corpus": corpus.describe(), "backbone": backbone.model_dump(),
                "train": cfg.model_dump(), "seed": seed, "device": torch.device(device).type,
                "precision": resolve_precision(cfg.precision, device)}
        return backbone, cfg, meta, Path(cache_dir) / "judges" / f"local-{config_hash(meta)}.pt"

    @classmethod
    def ready(cls, *, corpus, cache_dir, device, **params) -> bool:
        """Whether its finished checkpoint is in the cache (an unreadable one: not ready, the job says why)."""
        defaults = {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()
                    if p.kind is p.KEYWORD_ONLY and p.default is not p.empty}
        given = {**defaults, **params}
        given.pop("progress", None)
        *_, meta, ckpt = cls.training(corpus=corpus, cache_dir=cache_dir, device=device, **given)
        if not ckpt.exists():
            return False
        try:
            return bool(load_checkpoint(ckpt, meta={**meta, "label": "local judge"}).get("done"))
        except CheckpointError:
            return False

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


GPT2_LARGE = "openai-community/gpt2-large"
GPT2_LARGE_REVISION = "32b71b12589c2f8d625668d2335a01cac3249519"  # a hub commit: weights never move


@JUDGES.register("gpt2-large")
class GPT2LargeJudge(Judge):
    pinned = {"model": GPT2_LARGE, "revision": GPT2_LARGE_REVISION, "dtype": "float32"}
    floor_pool = 4  # 774M parameters on a CPU: the true-data floor scores 4 N sequences, not 100 N

    def __init__(self, *, corpus, cache_dir, device, batch_size: int = 8,
                 revision: str = GPT2_LARGE_REVISION):
        super().__init__(corpus=corpus, cache_dir=cache_dir, device=device)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        hub = dict(revision=revision, cache_dir=str(self.cache_dir / "hub"))
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(GPT2_LARGE, **hub)
            # float32 whatever the checkpoint's own dtype: scores do not depend on the download
            self.model = AutoModelForCausalLM.from_pretrained(GPT2_LARGE, dtype=torch.float32, **hub)
        except OSError as err:
            raise JudgeError(f"judge 'gpt2-large' could not load {GPT2_LARGE!r} at revision {revision!r} from "
                             f"the hub or its cache ({type(err).__name__}); use judge: exact or local offline") from None
        self.model.to(device).eval()
        self.batch_size = batch_size

    def score(self, tokens):
        texts = [self.corpus.decode(row) for row in tokens]
        eos = self.tokenizer.eos_token_id
        rows = [[eos] + self.tokenizer(t)["input_ids"][: self.model.config.n_positions - 1] for t in texts]
        return lm_token_nll(rows, model=self.model, pad=eos, device=self.device, batch_size=self.batch_size)


@torch.no_grad()
def lm_token_nll(rows: list[list[int]], *, model, pad: int, device, batch_size: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Score id rows with a causal LM: each row's first id is context, every later id is scored.

    Returns nll (N, M) float64 and mask (N, M), M = longest row - 1; mask[i, j] is True for the
    len(rows[i]) - 1 scored ids of row i. Rows are right-padded with `pad` within a batch (a
    causal model never lets padding change the scores before it)."""
    M = max(len(r) for r in rows) - 1
    nll = torch.zeros(len(rows), M, dtype=torch.float64)
    mask = torch.zeros(len(rows), M, dtype=torch.bool)
    for i in range(0, len(rows), batch_size):
        batch = rows[i:i + batch_size]
        ids = torch.full((len(batch), M + 1), pad, dtype=torch.long)
        for j, r in enumerate(batch):
            ids[j, : len(r)] = torch.tensor(r)
            mask[i + j, : len(r) - 1] = True
        ids = ids.to(device)
        logits = model(ids).logits[:, :-1].float()                              # (b, M, V)
        nll[i:i + len(batch)] = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:],
                                                reduction="none").double().cpu()
    return nll, mask
