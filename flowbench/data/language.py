"""The embedded language: the default corpus and its exact judge.

A synthetic language defined entirely in the project (fixed seed, nothing downloaded). It is a
hidden Markov model whose hidden state is z = (k, s):

  k  the topic (animals, food, sea, ...), drawn once per sequence from `topic_prior` and never
     changed within the sequence;
  s  the syntax state, a Markov chain over a small hand-written grammar of word classes
     (determiner, adjective, noun, pronoun, verb, adverb, preposition, object determiner,
     object noun, break = punctuation or conjunction).

    p(x_1..L) = sum_k pi[k] sum_{s_1..L} init[k, s_1] emit[k, s_1, x_1]
                              prod_{i>1} trans[k, s_{i-1}, s_i] emit[k, s_i, x_i]

The words are the English list of flowbench.data.words. The syntax state picks the word class;
words of the current topic get most of the class's mass (Zipf-like weights), same-class words of
other topics a little, and every word keeps a floor of probability in every state:

    emit[k, s] = (1 - emission_floor) * E_class[k, s] + emission_floor / V

so samples read as word sequences, distant tokens are correlated through the topic, and a wrong
word costs a bounded penalty (at most -log(emission_floor / V) nats). The grammar's structure
is fixed; its weights and the Zipf rankings are randomized a little by `seed`.

Exact judge: the likelihood is computable, so a generated sequence is scored by its true
-log p(x_i | x_<i) (`token_nll`), and the entropy rate gives the perplexity floor of real data.

Oracle denoiser: a family that can write the likelihood of its noisy state x_t given each clean
token, ev[b, i, v] = log p(x_t^i | x_1^i = v), hands that evidence to `posterior`, which returns
the exact log p(x_1^i = v | x_t) by forward-backward; a sampler driven by it shows what the
family's sampler achieves with a perfect network.

Devices: the tables are built on the CPU. The likelihood routines run on the device of their
input (evidence or ids) and return there; the tables they read are copied to that device once
and cached (`DeviceTables`), so an oracle sampler on a GPU never moves (B, L, V) tensors.
"""
from __future__ import annotations

import math
from numbers import Integral
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch

from flowbench.data.corpus import Corpus, CorpusError
from flowbench.data.words import CONTENT_CLASSES, TOPICS, vocabulary
from flowbench.registry import CORPORA

SYNTAX_STATES = ("det", "adj", "noun", "pron", "verb", "adv", "prep", "obj_det", "obj_noun", "break")
_S = {name: i for i, name in enumerate(SYNTAX_STATES)}
# syntax state -> word class(es) it emits, with weights
_STATE_CLASSES = {
    "det": {"det": 1.0}, "adj": {"adj": 1.0}, "noun": {"noun": 1.0}, "pron": {"pron": 1.0},
    "verb": {"verb": 1.0}, "adv": {"adv": 1.0}, "prep": {"prep": 1.0}, "obj_det": {"det": 1.0},
    "obj_noun": {"noun": 1.0}, "break": {"punct": 0.75, "conj": 0.25},
}
# the grammar: syntax state -> next syntax state, with base weights (absent = impossible)
_GRAMMAR = {
    "det": {"adj": 0.35, "noun": 0.65},
    "adj": {"adj": 0.15, "noun": 0.85},
    "noun": {"verb": 0.85, "adv": 0.15},
    "pron": {"verb": 0.8, "adv": 0.2},
    "verb": {"obj_det": 0.35, "prep": 0.25, "adv": 0.15, "break": 0.25},
    "adv": {"verb": 0.3, "prep": 0.3, "break": 0.4},
    "prep": {"obj_det": 0.8, "obj_noun": 0.2},
    "obj_det": {"obj_noun": 1.0},
    "obj_noun": {"prep": 0.25, "break": 0.75},
    "break": {"det": 0.5, "pron": 0.25, "noun": 0.15, "adj": 0.1},
}
_START = {"det": 0.5, "pron": 0.2, "noun": 0.2, "adj": 0.1}
_WEIGHT_NOISE = 0.3   # log-normal spread of the seeded grammar / function-word weights
_TOPIC_LEAK = 0.05    # mass of a content class given to the other topics' words
_ZIPF = 1.0           # exponent of the within-class Zipf weights

# seed-stream keys (np.random.SeedSequence([seed, key])); splits use disjoint streams
_TABLES_KEY = 0
_SPLIT_KEYS = {"train": 1, "validation": 2, "test": 3}
_ENTROPY_KEY = 4


def _zipf(n: int, rng: np.random.Generator) -> np.ndarray:
    """Zipf weights 1 / rank^a over n items in a seeded random order, summing to 1."""
    w = 1.0 / np.arange(1, n + 1) ** _ZIPF
    return w[rng.permutation(n)] / w.sum()


def _build_tables(n_topics: int, emission_floor: float, topic_concentration: float | None,
                  class_ids: dict[str, list[int]], topic_of: list[int], seed: int):
    """Seeded tables (numpy float64): topic_prior (K,), init (K,S), trans (K,S,S), emit (K,S,V)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _TABLES_KEY]))
    K, S, V = n_topics, len(SYNTAX_STATES), len(topic_of)
    topic_of_arr = np.asarray(topic_of)
    if topic_concentration is None:
        prior = np.full(K, 1.0 / K)
    else:
        prior = rng.dirichlet(np.full(K, float(topic_concentration)))

    def noisy(base: np.ndarray, size) -> np.ndarray:  # base (..., S) -> normalised rows
        w = base * np.exp(_WEIGHT_NOISE * rng.standard_normal(size))
        return w / w.sum(-1, keepdims=True)

    base_init = np.array([_START.get(s, 0.0) for s in SYNTAX_STATES])
    base_trans = np.array([[_GRAMMAR[a].get(b, 0.0) for b in SYNTAX_STATES] for a in SYNTAX_STATES])
    init = noisy(base_init, (K, S))
    trans = noisy(base_trans, (K, S, S))

    e_class = np.zeros((K, S, V))
    for s, name in enumerate(SYNTAX_STATES):
        for cls, cls_weight in _STATE_CLASSES[name].items():
            ids = np.asarray(class_ids[cls])
            if cls in CONTENT_CLASSES:
                for k in range(K):
                    own, other = ids[topic_of_arr[ids] == k], ids[topic_of_arr[ids] != k]
                    leak = _TOPIC_LEAK if len(other) else 0.0
                    e_class[k, s, own] += cls_weight * (1 - leak) * _zipf(len(own), rng)
                    if len(other):
                        e_class[k, s, other] += cls_weight * leak / len(other)
            else:  # shared class: one Zipf ranking per state, nudged per topic
                base = _zipf(len(ids), rng)
                e_class[:, s, ids] += cls_weight * noisy(base, (K, len(ids)))
    emit = (1 - emission_floor) * e_class + emission_floor / V
    return prior, init, trans, emit


class DeviceTables:
    """Named tensors kept where they were made, copied to each other device on first use.

    `on(device)` returns a namespace of the tensors on `device`: the originals for their own
    device, else copies made once and reused, so repeated calls never copy again."""

    def __init__(self, **tensors: torch.Tensor):
        devices = {t.device for t in tensors.values()}
        if len(devices) != 1:
            raise ValueError(f"DeviceTables: tensors must share one device, got {sorted(map(str, devices))}")
        self._copies = {devices.pop(): SimpleNamespace(**tensors)}

    def on(self, device: torch.device | str) -> SimpleNamespace:
        device = torch.device(device)
        if device not in self._copies:
            home = next(iter(self._copies.values()))
            self._copies[device] = SimpleNamespace(**{k: v.to(device) for k, v in vars(home).items()})
        return self._copies[device]

    def devices(self) -> list[torch.device]:
        return list(self._copies)


@CORPORA.register("hmm_language")
class HMMLanguage(Corpus):
    """Topic x syntax hidden Markov model over an English word list (see module docstring).

    Tables (float64 tensors): topic_prior (K,), init (K, S), trans (K, S, S), emit (K, S, V).
    Every likelihood routine is batched; messages are kept as (B, K, S) because the topic block
    of the transition matrix never mixes (trans is block diagonal over k).
    """

    exact = True

    def __init__(self, *, seq_len: int = 32, seed: int = 0, n_topics: int = 8,
                 emission_floor: float = 1e-4, topic_concentration: float | None = None):
        if not isinstance(seq_len, Integral) or seq_len < 1:
            raise CorpusError(f"hmm_language: seq_len must be an integer >= 1, got {seq_len!r}")
        if not isinstance(seed, Integral) or seed < 0:
            raise CorpusError(f"hmm_language: seed must be an integer >= 0, got {seed!r}")
        if not isinstance(n_topics, Integral) or not 1 <= n_topics <= len(TOPICS):
            raise CorpusError(f"hmm_language: n_topics must be in 1..{len(TOPICS)} "
                              f"(topics in the word list), got {n_topics!r}")
        if not 0.0 < float(emission_floor) < 1.0:
            raise CorpusError(f"hmm_language: emission_floor must lie in (0, 1), got {emission_floor!r}")
        if topic_concentration is not None and not float(topic_concentration) > 0:
            raise CorpusError(f"hmm_language: topic_concentration must be > 0 or None, "
                              f"got {topic_concentration!r}")
        seq_len, seed, n_topics = int(seq_len), int(seed), int(n_topics)
        words, class_ids, topic_of = vocabulary(n_topics)
        tables = _build_tables(n_topics, float(emission_floor), topic_concentration,
                               class_ids, topic_of, seed)
        self.seed, self.n_topics, self.emission_floor = seed, n_topics, float(emission_floor)
        self.topic_concentration = topic_concentration
        self.topic_of = torch.tensor(topic_of)  # (V,) topic of a content word, -1 for function words
        self._set_tables(*(torch.from_numpy(t) for t in tables), words=words, seq_len=seq_len)

    @classmethod
    def from_tables(cls, topic_prior: torch.Tensor, init: torch.Tensor, trans: torch.Tensor,
                    emit: torch.Tensor, *, words: list[str] | None = None, seq_len: int = 32
                    ) -> "HMMLanguage":
        """An instance with custom tables (K,), (K, S), (K, S, S), (K, S, V): each row a distribution."""
        self = cls.__new__(cls)
        self.seed, self.emission_floor, self.topic_concentration = None, None, None
        self.n_topics = len(topic_prior)
        self.topic_of = torch.full((len(emit[0][0]),), -1)
        words = list(words) if words is not None else [f"w{v}" for v in range(len(self.topic_of))]
        self._set_tables(topic_prior, init, trans, emit, words=words, seq_len=seq_len)
        return self

    def _set_tables(self, topic_prior, init, trans, emit, *, words, seq_len) -> None:
        prior, init, trans, emit = (torch.as_tensor(t, dtype=torch.float64)
                                    for t in (topic_prior, init, trans, emit))
        K, S, V = emit.shape
        if prior.shape != (K,) or init.shape != (K, S) or trans.shape != (K, S, S) or len(words) != V:
            raise CorpusError("hmm_language: table shapes disagree (want (K,), (K,S), (K,S,S), (K,S,V))")
        for name, t in (("topic_prior", prior), ("init", init), ("trans", trans), ("emit", emit)):
            if (t < 0).any() or not torch.allclose(t.sum(-1), torch.ones((), dtype=torch.float64)):
                raise CorpusError(f"hmm_language: rows of {name} must be distributions")
        if not isinstance(seq_len, Integral) or seq_len < 1:
            raise CorpusError(f"hmm_language: seq_len must be an integer >= 1, got {seq_len!r}")
        self.topic_prior, self.init, self.trans, self.emit = prior, init, trans, emit
        self.words, self.vocab_size, self.seq_len = list(words), V, int(seq_len)
        self.n_states = K * S
        self._trans_t = trans.transpose(1, 2).contiguous()            # (K, S, S): [k, s', s]
        self._emit_flat = emit.reshape(K * S, V)                       # (KS, V)
        self._emit_by_token = self._emit_flat.t().contiguous()         # (V, KS)
        self._start = prior[:, None] * init                            # (K, S) p(k, s_1)
        # what the likelihood routines read, on the device of their input
        self._tables = DeviceTables(trans=trans, trans_t=self._trans_t, emit_flat=self._emit_flat,
                                    emit_by_token=self._emit_by_token, start=self._start)
        self._entropy: dict[int, tuple[float, float]] = {}

    # --- data ------------------------------------------------------------------------------
    def split(self, name: str, n: int) -> torch.Tensor:
        """n sequences of split `name`, LongTensor (n, L); row j depends only on (seed, name, j)."""
        if name not in _SPLIT_KEYS:
            raise CorpusError(f"hmm_language: unknown split {name!r} (expected 'train', 'validation' or 'test')")
        return self._sample_numpy_stream(_SPLIT_KEYS[name], n)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n exact samples, LongTensor (n, L) on the generator's device, by ancestral sampling.

        The uniforms come from `generator` on its own device; the L sequential draws that use
        them run on the CPU, where the tables are (a few (n,) searches per position)."""
        device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(n, 2 * self.seq_len + 1, dtype=torch.float64, generator=generator, device=device)
        return self._sample_from_uniforms(u.cpu()).to(device)

    def _sample_numpy_stream(self, key: int, n: int) -> torch.Tensor:
        if n < 0:
            raise CorpusError(f"hmm_language: cannot draw {n} sequences")
        seed = 0 if self.seed is None else self.seed
        rng = np.random.default_rng(np.random.SeedSequence([seed, key]))
        # numpy fills row-major, so the first rows of a longer draw equal a shorter draw
        return self._sample_from_uniforms(torch.from_numpy(rng.random((n, 2 * self.seq_len + 1))))

    def _sample_from_uniforms(self, u: torch.Tensor) -> torch.Tensor:
        """Inverse-CDF ancestral sampling from uniforms u (n, 2L+1): topic, s_1, then x_i, s_{i+1}."""
        K, S, V = self.emit.shape
        n, L = u.shape[0], self.seq_len
        topic = _draw(self.topic_prior[None], torch.zeros(n, dtype=torch.long), u[:, 0])   # (n,)
        state = _draw(self.init, topic, u[:, 1])                                             # (n,)
        trans_flat = self.trans.reshape(K * S, S)
        x = torch.empty(n, L, dtype=torch.long)
        for i in range(L):
            row = topic * S + state
            x[:, i] = _draw(self._emit_flat, row, u[:, 2 + i])
            if i + 1 < L:
                state = _draw(trans_flat, row, u[:, 2 + L + i])
        return x

    def decode(self, ids) -> str:
        return " ".join(self.words[int(i)] for i in ids)

    def describe(self) -> dict:
        d = {**super().describe(), "seed": self.seed, "n_topics": self.n_topics,
             "emission_floor": self.emission_floor}
        if self.topic_concentration is not None:
            d["topic_concentration"] = self.topic_concentration
        return d

    # --- forward / backward ----------------------------------------------------------------
    def _step(self, alpha: torch.Tensor) -> torch.Tensor:
        """(B, K, S) -> (B, K, S): sum_s alpha[b, k, s] trans[k, s, s']."""
        return torch.bmm(alpha.transpose(0, 1), self._tables.on(alpha.device).trans).transpose(0, 1)

    def _step_back(self, beta: torch.Tensor) -> torch.Tensor:
        """(B, K, S) -> (B, K, S): sum_s' trans[k, s, s'] beta[b, k, s']."""
        return torch.bmm(beta.transpose(0, 1), self._tables.on(beta.device).trans_t).transpose(0, 1)

    def _forward(self, lik_at: Callable[[int], torch.Tensor], B: int, L: int, keep: bool = False, *,
                 device: torch.device):
        """Scaled forward algorithm over per-position state likelihoods lik_at(i) (B, K, S).

            pred_1 = pi[k] init[k, s]               pred_i = sum_s alphahat_{i-1}[k, s] trans[k, s, s']
            alpha_i = pred_i * lik_i                c_i = sum_{k,s} alpha_i     alphahat_i = alpha_i / c_i

        so c_i = p(e_i | e_<i) and log p(e_1..L) = sum_i log c_i. Returns log_c (B, L) and, if
        keep, the predictive messages pred (B, L, K, S) (each sums to 1 over (k, s)), on `device`.
        """
        K, S = self.init.shape
        log_c = torch.empty(B, L, dtype=torch.float64, device=device)
        preds = torch.empty(B, L, K, S, dtype=torch.float64, device=device) if keep else None
        pred = self._tables.on(device).start.expand(B, K, S)
        tiny = torch.finfo(torch.float64).tiny
        for i in range(L):
            if i > 0:
                pred = self._step(alpha)
            if keep:
                preds[:, i] = pred
            a = pred * lik_at(i)
            c = a.sum((1, 2))                                   # (B,)
            log_c[:, i] = c.log()
            alpha = a / c.clamp_min(tiny)[:, None, None]        # an impossible row stays all zero
        return log_c, preds

    def _token_lik(self, x: torch.Tensor) -> Callable[[int], torch.Tensor]:
        x = self._check_ids(x)
        K, S = self.init.shape
        emit_by_token = self._tables.on(x.device).emit_by_token
        return lambda i: emit_by_token[x[:, i]].view(-1, K, S)         # (B, K, S) emit[k, s, x_i]

    def _evidence_lik(self, log_evidence: torch.Tensor):
        """lik[b, i, k, s] = sum_v emit[k, s, v] exp(ev[b, i, v] - m[b, i]), m the row max."""
        ev = torch.as_tensor(log_evidence).to(torch.float64)
        if ev.dim() != 3 or ev.shape[-1] != self.vocab_size or ev.shape[1] < 1:
            raise CorpusError(f"hmm_language: evidence must be (B, L, {self.vocab_size}), got {tuple(ev.shape)}")
        K, S = self.init.shape
        m = ev.amax(-1, keepdim=True)                                            # (B, L, 1)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        lik = (ev - m).exp_() @ self._tables.on(ev.device).emit_by_token         # (B, L, KS)
        return ev, m.squeeze(-1), lik.view(*ev.shape[:2], K, S)

    def _check_ids(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x)
        if x.dim() != 2 or x.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise CorpusError(f"hmm_language: expected token ids (B, L), got {x.dtype} {tuple(x.shape)}")
        if x.numel() and (x.min() < 0 or x.max() >= self.vocab_size):
            raise CorpusError(f"hmm_language: token ids must lie in 0..{self.vocab_size - 1}")
        return x.long()

    # --- likelihoods -----------------------------------------------------------------------
    def token_nll(self, x: torch.Tensor) -> torch.Tensor:
        """-log p(x_i | x_<i) for every position, float64 (B, L); sums to -log_prob(x)."""
        x = self._check_ids(x)
        log_c, _ = self._forward(self._token_lik(x), x.shape[0], x.shape[1], device=x.device)
        return -log_c

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) by the scaled forward algorithm, float64 (B,)."""
        return -self.token_nll(x).sum(1)

    def log_evidence_prob(self, log_evidence: torch.Tensor) -> torch.Tensor:
        """log sum_x p(x) prod_i exp(ev[i, x_i]) for evidence (B, L, V), float64 (B,).

        log_prob(x) is the special case ev[i, v] = 0 if v == x_i else -inf."""
        ev, m, lik = self._evidence_lik(log_evidence)
        log_c, _ = self._forward(lambda i: lik[:, i], ev.shape[0], ev.shape[1], device=ev.device)
        return log_c.sum(1) + m.sum(1)

    def posterior(self, log_evidence: torch.Tensor) -> torch.Tensor:
        """Exact log posterior marginals log p(x_i = v | all evidence), float64 (B, L, V), computed
        and returned on the evidence's device.

        With e_j the evidence of position j, the forward-backward messages give the hidden-state
        posterior that leaves out position i's own evidence,

            q_i(z) = p(z_i = z | e_{-i}) ∝ pred_i(z) * beta_i(z),
            beta_i(z) ∝ sum_z' trans[z, z'] lik_{i+1}(z') beta_{i+1}(z'),   beta_L = 1,

        and then p(x_i = v | e) ∝ [sum_z q_i(z) emit[z, v]] * exp(ev[i, v]). Messages are
        rescaled to sum 1 at every step; ev may hold -inf. Each row logsumexp's to 0, except
        for evidence of probability zero under the language (NaN rows).
        """
        ev, m, lik = self._evidence_lik(log_evidence)
        B, L = ev.shape[:2]
        K, S = self.init.shape
        dev = ev.device
        _, preds = self._forward(lambda i: lik[:, i], B, L, keep=True, device=dev)
        tiny = torch.finfo(torch.float64).tiny
        q = torch.empty(B, L, K, S, dtype=torch.float64, device=dev)
        beta = torch.ones(B, K, S, dtype=torch.float64, device=dev)
        for i in range(L - 1, -1, -1):
            q[:, i] = preds[:, i] * beta
            if i > 0:
                beta = self._step_back(lik[:, i] * beta)
                beta = beta / beta.sum((1, 2), keepdim=True).clamp_min(tiny)
        q = q.view(B, L, K * S)
        q = q / q.sum(-1, keepdim=True)                                         # p(z_i | e_{-i})
        # normaliser sum_v (q emit)[v] exp(ev[v] - m) = sum_z q(z) lik(z): no (B, L, V) temporary
        log_norm = (q * lik.view(B, L, K * S)).sum(-1).log_().add_(m)            # (B, L)
        logits = (q @ self._tables.on(dev).emit_flat).log_().add_(ev)           # (B, L, V)
        return logits.sub_(log_norm[..., None])

    # --- exact summaries -------------------------------------------------------------------
    def entropy_rate(self, n: int = 20000) -> tuple[float, float]:
        """True entropy per token in nats, mean of -log p(x)/L over n exact samples, and its
        standard error. The samples come from a fixed stream of their own; cached per n."""
        if n not in self._entropy:
            h = torch.cat([-self.log_prob(x) / self.seq_len
                           for x in self._sample_numpy_stream(_ENTROPY_KEY, n).split(5000)])
            se = float(h.std() / math.sqrt(n)) if n > 1 else float("nan")
            self._entropy[n] = (float(h.mean()), se)
        return self._entropy[n]

    def topic_posterior(self, x: torch.Tensor) -> torch.Tensor:
        """p(k | x) for each sequence of ids x (B, L): float64 (B, K), the exact features of
        MAUVE on this language (flowbench/metrics/features.py)."""
        x = self._check_ids(x)
        B, L = x.shape
        lik = self._token_lik(x)
        _, preds = self._forward(lik, B, L, keep=True, device=x.device)
        last = preds[:, -1] * lik(L - 1)                                    # (B, K, S) p(k, s_L, x)
        joint = last.sum(-1)                                                # (B, K)
        return joint / joint.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)

    def state_marginals(self) -> torch.Tensor:
        """p(k, s_i) for every position, float64 (L, K, S)."""
        m = [self._start]
        for _ in range(self.seq_len - 1):
            m.append(self._step(m[-1][None])[0])
        return torch.stack(m)

    def ngram_marginals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact unigram (V,) averaged over positions and bigram (V, V) of adjacent pairs
        (x_i, x_{i+1}) averaged over i = 1..L-1 (all zero when L = 1):

            p(a) = mean_i sum_z m_i(z) emit[z, a]
            p(a, b) = mean_i sum_{k,s,s'} m_i(k, s) emit[k, s, a] trans[k, s, s'] emit[k, s', b]
        """
        K, S, V = self.emit.shape
        m = self.state_marginals()                                          # (L, K, S)
        unigram = m.mean(0).reshape(K * S) @ self._emit_flat                  # (V,)
        if self.seq_len < 2:
            return unigram, torch.zeros(V, V, dtype=torch.float64)
        m_pair = m[:-1].mean(0)                                             # (K, S)
        left = (m_pair[..., None] * self.emit).reshape(K * S, V)            # (KS, V)
        right = torch.bmm(self.trans, self.emit).reshape(K * S, V)          # (KS, V)
        return unigram, left.t() @ right


def _draw(probs: torch.Tensor, row: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Index j ~ probs[row[n]] for each n by inverse CDF with uniforms u (n,).

    probs (R, C) rows are distributions; every row's CDF is offset by its row number and the
    rows are searched together as one sorted sequence (no (n, C) gather). Rounding at a row's
    ends is clamped to the row's first / last category of positive probability."""
    R, C = probs.shape
    flat = (probs.cumsum(-1) + torch.arange(R, dtype=torch.float64)[:, None]).reshape(-1)
    j = torch.searchsorted(flat, row.to(torch.float64) + u, right=True) - row * C
    pos = torch.where(probs > 0, torch.arange(C), -1)                        # (R, C)
    last = pos.amax(-1)
    first = torch.where(probs > 0, torch.arange(C), C).amin(-1)
    return torch.minimum(torch.maximum(j, first[row]), last[row])
