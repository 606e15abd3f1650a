"""The exact tilted target of a topic reward and the scores of samples against it.

    rho(x) = exp(lambda r_k(x)) p(x) / Z_lambda,    r_k(x) = log p(topic = k | x),

For lambda = 1, rho(x) = p(x, k) / pi_k = p(x | k): the language restricted to topic k, so
Z_1 = pi_k, its NLL is exact and exact samples of it are the language's ancestral samples with
the topic fixed. For another lambda, Z_lambda = E_p[p(k | x)^lambda] is estimated from
`n_reference` exact samples of the language (an importance-sampling estimate; the row says so
in `target_reference`).

Topic of a sample: argmax_j p(j | x) (its MAP topic). Scores of N token sequences (N, L):
  reward_mean  mean r_k(x)
  topic_share  share of samples whose MAP topic is k
  topic_kl     KL(target's MAP-topic shares || the samples'), the samples' shares smoothed by
               one pseudo-sample spread over the K topics; all mass on one topic where the
               target spreads (reward hacking) shows as a large KL
  tilted_nll   mean -log rho(x) / L, nats per token (target_nll_floor: what exact samples of
               the target score, lambda = 1 only)
  entropy      flowbench.metrics' per-sample unigram entropy
"""
from __future__ import annotations

import math

import torch

from flowbench.data.language import HMMLanguage
from flowbench.metrics import entropy
from flowbench.steering.rewards import topic_log_posterior


class TiltedTarget:
    def __init__(self, corpus: HMMLanguage, *, topic: int, lam: float, n_reference: int = 4096,
                 seed: int = 0):
        self.corpus, self.topic, self.lam = corpus, int(topic), float(lam)
        gen = torch.Generator().manual_seed(seed)
        K = corpus.n_topics
        if self.lam == 1.0:
            self.log_z = math.log(float(corpus.topic_prior[self.topic]))
            prior = torch.zeros(K, dtype=torch.float64)
            prior[self.topic] = 1.0
            restricted = HMMLanguage.from_tables(prior, corpus.init, corpus.trans, corpus.emit,
                                                 words=corpus.words, seq_len=corpus.seq_len)
            ref = self._log_post_ids(restricted.sample(n_reference, generator=gen))
            self.shares = torch.bincount(ref.argmax(-1), minlength=K).double() / n_reference
            self.reference = f"exact Z; shares from {n_reference} exact samples"
            # what exact samples of the target score: the floor of tilted_nll
            target_ids = restricted.sample(n_reference, generator=gen)
            self.nll_floor = float(-self.log_prob(target_ids).mean() / corpus.seq_len)
        else:
            ref = self._log_post_ids(corpus.sample(n_reference, generator=gen))     # (n, K)
            log_w = self.lam * ref[:, self.topic]
            self.log_z = float(log_w.logsumexp(0) - math.log(n_reference))
            w = (log_w - log_w.logsumexp(0)).exp()
            self.shares = torch.zeros(K, dtype=torch.float64).index_add_(0, ref.argmax(-1), w)
            self.reference = f"Z and shares from {n_reference} weighted exact samples"
            self.nll_floor = None  # no exact samples of the target for lambda != 1

    def _log_post_ids(self, ids: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.one_hot(ids, self.corpus.vocab_size).double()
        return torch.cat([topic_log_posterior(self.corpus, c) for c in x.split(512)])

    def log_prob(self, ids: torch.Tensor) -> torch.Tensor:
        """log rho(x) for token ids (N, L): float64 (N,)."""
        r = self._log_post_ids(ids)[:, self.topic]
        return self.lam * r + self.corpus.log_prob(ids) - self.log_z

    def score(self, ids: torch.Tensor) -> dict[str, float]:
        ids = ids.long().cpu()
        log_post = self._log_post_ids(ids)                                   # (N, K)
        N, K = log_post.shape
        counts = torch.bincount(log_post.argmax(-1), minlength=K).double()
        own = (counts + 1.0 / K) / (N + 1.0)                                  # smoothed shares
        target = self.shares
        kl = float((torch.xlogy(target, target) - target * own.log()).sum())
        nll = -(self.lam * log_post[:, self.topic] + self.corpus.log_prob(ids) - self.log_z)
        return {"reward_mean": float(log_post[:, self.topic].mean()),
                "topic_share": float(counts[self.topic] / N), "topic_kl": kl,
                "tilted_nll": float(nll.mean() / ids.shape[1]),
                "target_topic_share": float(target[self.topic]), "target_nll_floor": self.nll_floor,
                **entropy(tokens=ids)}
