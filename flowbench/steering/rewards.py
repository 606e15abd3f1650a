"""Rewards r(x) on the simplex: x (B, L, V) soft one-hots -> r (B,), differentiable in x.

A reward is built from the corpus and its own keyword arguments (`steering.reward_params` in a
suite) and registered by name in REWARDS, like families and judges.

topic   r_k(x) = log p(topic = k | x) under the embedded language, by the forward algorithm
        with soft emissions: position i contributes the state likelihood

            lik_i(k, s) = sum_v x_i[v] emit[k, s, v],

        which is emit[k, s, x_i] on a one-hot, so on token ids r_k is the exact log posterior
        of the topic. The topic never changes within a sequence (trans is block diagonal over
        k), so one forward pass per topic gives log p(x | k) and

            log p(k | x) = log pi_k + log p(x | k) - logsumexp_j (log pi_j + log p(x | j)).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from flowbench.registry import Registry


class Reward:
    """r(x): (B, L, V) simplex points -> (B,) float64; `of_ids` scores token ids (B, L)."""

    name: str

    def __init__(self, *, corpus):
        self.corpus = corpus

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def of_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self(F.one_hot(ids.long(), self.corpus.vocab_size).double())


REWARDS: Registry = Registry("reward", base=Reward)


def topic_log_posterior(corpus, x: torch.Tensor) -> torch.Tensor:
    """log p(topic | x) with soft emissions: x (B, L, V) -> (B, K) float64, differentiable.

    Scaled forward algorithm per topic: alpha_1 = init[k] * lik_1, alpha_i = (alphahat_{i-1}
    trans[k]) * lik_i, c_i = sum_s alpha_i, alphahat_i = alpha_i / c_i, log p(x | k) = sum_i log c_i."""
    if x.dim() != 3 or x.shape[-1] != corpus.vocab_size:
        raise ValueError(f"reward: x must be (B, L, {corpus.vocab_size}), got {tuple(x.shape)}")
    x = x.double()
    emit, trans = corpus.emit.to(x.device), corpus.trans.to(x.device)   # (K, S, V), (K, S, S)
    lik = torch.einsum("blv,ksv->blks", x, emit)                         # (B, L, K, S)
    tiny = torch.finfo(torch.float64).tiny
    alpha = corpus.init.to(x.device) * lik[:, 0]                         # (B, K, S)
    log_px_k = torch.zeros(x.shape[0], emit.shape[0], dtype=torch.float64, device=x.device)
    for i in range(x.shape[1]):
        if i:
            alpha = torch.einsum("bks,kst->bkt", alpha, trans) * lik[:, i]
        c = alpha.sum(-1)                                                # (B, K)
        log_px_k = log_px_k + c.clamp_min(tiny).log()
        alpha = alpha / c.clamp_min(tiny)[..., None]
    joint = corpus.topic_prior.to(x.device).log() + log_px_k             # (B, K) log p(x, k)
    return joint - joint.logsumexp(-1, keepdim=True)


@REWARDS.register("topic")
class TopicReward(Reward):
    """r(x) = log p(topic = `topic` | x) (module docstring); needs a corpus with topics."""

    def __init__(self, *, corpus, topic: int = 0):
        super().__init__(corpus=corpus)
        n_topics = getattr(corpus, "n_topics", None)
        if n_topics is None or not hasattr(corpus, "emit"):
            raise ValueError(f"reward 'topic' needs the embedded language's topics; corpus "
                             f"{getattr(corpus, 'name', corpus)!r} has none")
        if not 0 <= int(topic) < n_topics:
            raise ValueError(f"reward 'topic': topic must lie in 0..{n_topics - 1}, got {topic!r}")
        self.topic = int(topic)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return topic_log_posterior(self.corpus, x)[:, self.topic]
