"""Which MAUVE features see word order: true data and three order-destroying probes, per feature set.

Usage: python scripts/mauve_probes.py [--n 256] [--seeds 5] [--features minilm,local-last,...]
                                      [--english [--suite suites/english.yaml]]

On the embedded language (hmm_language, seq_len 32, the nfe_sweep corpus) p is one of
  true      N test-split sequences
  shuffled  the same sequences, words permuted within each sequence
  resampled each sequence's words drawn with replacement from the sequence itself (topic kept,
            order lost)
  unigram   i.i.d. draws from the language's exact unigram marginal (topic and order lost)
  10% noised  true sequences with 10% of their words replaced by unigram draws (graded: how far a
            mostly right sample falls, not an order probe)
and q the first N validation sequences (as the metric's reference). For each feature set it
prints MAUVE (mean and range over k-means seeds) and each probe's ratio to true data's MAUVE.

--english: real English instead, the corpus of the English suite (`--suite`, default
suites/english.yaml: WordNet glosses, its byte-level BPE, its L). A BPE token is not a word, so the
three probes above (on tokens: a token shuffle breaks words apart) come with their word-level
twins, which move whole words and keep every word intact:
  words shuffled   the sequence's words (a token opening with whitespace, EOS or the token after
                   EOS starts one) permuted within the sequence (same tokens, same length)
  words resampled  the sequence's words drawn with replacement, cut to L tokens
  words unigram    i.i.d. words of the train split's first 4096 sequences, cut to L tokens
Only the text features and the `local-*` ones apply there (no exact likelihood); the `local-*`
candidates use the suite's own judge there (`eval.judge: local` and its `judge_params`; with
`--small-judge`, LOCAL), trained on the train split first (cached).

The choice this table made is written in docs/metrics.md (mauve). Cost: the `local-*` candidates
first train the `local` judge's GPT-2 at LOCAL (cached); minilm-concat took 19 minutes on a loaded
2-core machine, every other candidate a few minutes or less.
"""
from __future__ import annotations

import argparse
import time
from functools import lru_cache

import numpy as np
import torch

from flowbench.data.language import HMMLanguage
from flowbench.metrics.features import (JUDGE_SURPRISAL_WEIGHT, SURPRISAL_WEIGHT, exact_features,
                                        minilm_features, minilm_surprisal_features, surprisal_features)
from flowbench.metrics.mauve_score import mauve_of


# an in-domain GPT-2 small enough to train in minutes on a CPU (the `local` judge's model)
LOCAL = dict(d_model=64, n_layers=2, n_heads=4, steps=1000, lr=3e-3)


ORDER_PROBES = ("shuffled", "resampled", "unigram", "words shuffled", "words resampled", "words unigram")
EXACT_ONLY = ("exact", "minilm+surprisal", "exact-nll", "exact+surprisal")  # need the language's likelihood


def probes(corpus, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    true = corpus.split("test", n)
    g = torch.Generator().manual_seed(seed)
    N, L = true.shape
    shuffled = torch.stack([row[torch.randperm(L, generator=g)] for row in true])
    resampled = torch.gather(true, 1, torch.randint(0, L, (N, L), generator=g))
    if getattr(corpus, "exact", False):
        unigram, _ = corpus.ngram_marginals()
    else:  # real text: the train split's token frequencies
        unigram = torch.bincount(train_head(corpus).reshape(-1), minlength=corpus.vocab_size)
    iid = torch.multinomial(unigram.float(), N * L, replacement=True, generator=g).view(N, L)
    # a graded probe, not an order probe: 10% of the true tokens replaced by unigram draws
    noised = torch.where(torch.rand(N, L, generator=g) < 0.1, iid.roll(1, 0), true)
    sets = {"true": true, "shuffled": shuffled, "resampled": resampled, "unigram": iid, "10% noised": noised}
    if not getattr(corpus, "exact", False):  # BPE tokens are not words: move whole words too
        sets.update(word_probes(corpus, true, seed=seed))
    return sets


def train_head(corpus, n: int = 4096) -> torch.Tensor:
    """The train split's first n sequences (all, where it holds fewer)."""
    return corpus.split("train", min(n, corpus.available("train") or n))


def word_starts(corpus) -> torch.Tensor:
    """(V,) bool: the token opens a word (its text starts with whitespace, or it is EOS)."""
    starts = torch.tensor([corpus.decode([i])[:1].isspace() for i in range(corpus.vocab_size)])
    eos = getattr(corpus, "eos_id", None)
    if eos is not None:
        starts[eos] = True
    return starts


def words_of(row: torch.Tensor, starts: torch.Tensor, eos: int | None) -> list[list[int]]:
    """A sequence's tokens grouped into words: a word starts at a word-opening token, at the token
    after EOS (a document's first word has no leading space) and at the sequence's first token."""
    words: list[list[int]] = []
    previous = None
    for t in row.tolist():
        if not words or starts[t] or previous == eos:
            words.append([t])
        else:
            words[-1].append(t)
        previous = t
    return words


def fill(words: list[list[int]], length: int) -> torch.Tensor:
    """Concatenated words cut to `length` tokens."""
    ids = [t for w in words for t in w]
    assert len(ids) >= length
    return torch.tensor(ids[:length])


def word_probes(corpus, true: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """The order probes on whole words (module docstring): shuffled within the sequence (its
    tokens exactly, in another word order), resampled from the sequence, and i.i.d. words of the
    train split, each cut to the sequence length."""
    g = torch.Generator().manual_seed(seed + 1)
    starts, eos = word_starts(corpus), getattr(corpus, "eos_id", None)
    L = true.shape[1]
    pool = [w for row in train_head(corpus) for w in words_of(row, starts, eos)[1:]]  # first: may be cut

    def draw(choices: list[list[int]]) -> torch.Tensor:
        picked, total = [], 0
        while total < L:
            w = choices[int(torch.randint(len(choices), (1,), generator=g))]
            picked.append(w)
            total += len(w)
        return fill(picked, L)

    shuffled, resampled, unigram = [], [], []
    for row in true:
        words = words_of(row, starts, eos)
        shuffled.append(fill([words[i] for i in torch.randperm(len(words), generator=g).tolist()], L))
        resampled.append(draw(words))
        unigram.append(draw(pool))
    return {"words shuffled": torch.stack(shuffled), "words resampled": torch.stack(resampled),
            "words unigram": torch.stack(unigram)}


@torch.inference_mode()
def minilm_token_states(texts: list[str], *, length: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """MiniLM's last hidden state at each of `length` word pieces (padded or cut) and the mask."""
    from flowbench.metrics.features import BATCH, minilm_model

    tokenizer, model = minilm_model()
    batch = tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
    hidden = torch.cat([model(**{k: v[i:i + BATCH] for k, v in batch.items()}).last_hidden_state
                        for i in range(0, len(texts), BATCH)])
    return hidden.float().numpy(), batch["attention_mask"].numpy()


@lru_cache(maxsize=1)
def local_model(corpus, cache_dir: str):
    """The `local` judge's GPT-2 at LOCAL, trained once on the train split and cached."""
    from flowbench.judges import LocalJudge

    return LocalJudge(corpus=corpus, cache_dir=cache_dir, device=torch.device("cpu"), progress=False,
                      **LOCAL).model


@torch.inference_mode()
def local_states(tokens: torch.Tensor, corpus, cache_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """The in-domain GPT-2's final hidden states (N, L, d) after BOS and its per-token NLL (N, L)."""
    model = local_model(corpus, cache_dir)
    inp = torch.cat([torch.full_like(tokens[:, :1], corpus.vocab_size), tokens], dim=1)
    hidden = model.gpt2.transformer(input_ids=inp).last_hidden_state                   # (N, L+1, d)
    logits = model.gpt2.lm_head(hidden)[:, :-1, :corpus.vocab_size]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")
    return hidden[:, 1:].numpy(), nll.numpy()


def candidates(corpus, cache_dir: str, reference: torch.Tensor) -> dict:
    """name -> featurize(tokens (N, L)) -> (N, D) array. mauve-text l2-normalises each vector,
    so a block that must keep its level (surprisal) is not normalised on its own. `reference`:
    the held-out sequences MAUVE compares with (the origin of the z-scored surprisal)."""
    texts = lambda t: [corpus.decode(r) for r in t]                    # noqa: E731
    local = lambda t: local_states(t, corpus, cache_dir)               # noqa: E731
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)      # noqa: E731
    surprisal = lambda nll: surprisal_features(nll, vocab_size=corpus.vocab_size)  # noqa: E731
    exact_nll = lambda t: corpus.token_nll(t).numpy()                 # noqa: E731
    mean_nll = lambda t: local(t)[1].mean(1)                           # noqa: E731
    zscore = lambda t: (mean_nll(t) - mean_nll(reference).mean()) / mean_nll(reference).std()  # noqa: E731
    return {
        # the library's feature sets
        "minilm": lambda t: minilm_features(texts(t)),
        "exact": lambda t: exact_features(t, corpus),
        "minilm+surprisal": lambda t: minilm_surprisal_features(t, corpus=corpus, texts=texts(t)),
        # MiniLM without mean pooling
        "minilm-cls": lambda t: minilm_token_states(texts(t))[0][:, 0],
        "minilm-concat": lambda t: (lambda h, m: (h * m[..., None]).reshape(len(h), -1))(
            *minilm_token_states(texts(t))),
        # an in-domain GPT-2 (the `local` judge's model at LOCAL)
        "local-last": lambda t: local(t)[0][:, -1],
        "local-mean": lambda t: local(t)[0].mean(1),
        "local-concat": lambda t: local(t)[0].reshape(len(t), -1),
        # per-token surprisal: by position (the l2 normalisation removes its level), sorted, and
        # sorted beside a unit content block at weight 1 (the library's minilm+surprisal: 0.5)
        "local-nll": lambda t: local(t)[1],
        "exact-nll": exact_nll,
        "local-nll-sorted": lambda t: np.sort(local(t)[1], axis=1),
        "local-mean+local-surprisal": lambda t: np.concatenate([unit(local(t)[0].mean(1)), surprisal(local(t)[1])], 1),
        "minilm+local-surprisal": lambda t: np.concatenate([unit(minilm_features(texts(t))), surprisal(local(t)[1])], 1),
        # the library's minilm+surprisal with the local GPT-2's NLL in place of the exact one (real
        # text), at the library's weight of the surprisal block and at larger ones
        **{f"minilm+local-surprisal@{w}": (lambda w: lambda t: np.concatenate(
            [unit(minilm_features(texts(t))), w * surprisal(local(t)[1])], 1))(w)
           for w in (SURPRISAL_WEIGHT, 2.0, 4.0)},
        # the library's minilm+judge-surprisal with the local GPT-2 as the judge: the mean per-token
        # NLL as a z-score against the reference's, at the library's weight and others
        **{f"minilm+local-zsurprisal@{w}": (lambda w: lambda t: np.concatenate(
            [unit(minilm_features(texts(t))), w * zscore(t)[:, None]], 1))(w)
           for w in (0.05, JUDGE_SURPRISAL_WEIGHT, 0.2)},
        "exact+surprisal": lambda t: np.concatenate([unit(exact_features(t, corpus)), surprisal(exact_nll(t))], 1),
        # minilm+surprisal at other weights of the surprisal block (the library's: SURPRISAL_WEIGHT)
        **{f"minilm+surprisal@{w}": (lambda w: lambda t: np.concatenate(
            [unit(minilm_features(texts(t))), w * surprisal(exact_nll(t))], 1))(w) for w in (1.0, 0.25, 0.1)},
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=256, help="samples per set (the suite's num_samples)")
    ap.add_argument("--seeds", type=int, default=5, help="k-means seeds per score")
    ap.add_argument("--features", default=None, help="comma-separated subset of the candidates")
    ap.add_argument("--cache-dir", default=".cache/flowbench")
    ap.add_argument("--english", action="store_true",
                    help="real English instead: the corpus of --suite (WordNet glosses, byte-level BPE); "
                         "token and whole-word probes; only the text and local-* features apply")
    ap.add_argument("--suite", default="suites/english.yaml", help="with --english: the suite whose corpus to read")
    ap.add_argument("--small-judge", action="store_true",
                    help="with --english: the local-* features from LOCAL's GPT-2, not the suite's judge")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    if args.english:
        from flowbench.config import load_suite
        from flowbench.plan import make_corpus

        suite = load_suite(args.suite)
        corpus = make_corpus(suite, cache_dir=args.cache_dir)
        print(f"corpus {corpus.describe()}")
        if suite.eval.judge == "local" and not args.small_judge:
            LOCAL.clear()
            LOCAL.update(suite.eval.judge_params)
        print(f"local-* features: the local judge's GPT-2 at {LOCAL}")
    else:
        corpus = HMMLanguage(seq_len=32, seed=0)
    sets = probes(corpus, args.n)
    reference = corpus.split("validation", args.n)
    table = candidates(corpus, args.cache_dir, reference)
    exact = getattr(corpus, "exact", False)
    names = args.features.split(",") if args.features else [
        n for n in table if exact or not (n in EXACT_ONLY or n.startswith("minilm+surprisal"))]
    seeds = [25 + s for s in range(args.seeds)]
    if any("local" in n for n in names):
        local_model(corpus, args.cache_dir)  # trained here, outside the featurizers' inference mode

    print(f"N = {args.n}, k-means seeds {seeds[0]}..{seeds[-1]}; MAUVE mean [min, max] over seeds; "
          f"ratio = probe mean / true mean")
    print(f"| features | {' | '.join(sets)} | max ratio (order probes) | seconds |")
    print("|---|" + "---|" * (len(sets) + 2))
    for name in names:
        start = time.perf_counter()
        q = table[name](reference)
        scores = {}
        for probe, tokens in sets.items():
            p = table[name](tokens)
            scores[probe] = np.array([mauve_of(p, q, scaling=5.0, buckets="auto", seed=s).mauve for s in seeds])
        true = scores["true"].mean()
        ratio = max(scores[p].mean() / true for p in ORDER_PROBES if p in scores)
        cells = [f"{v.mean():.3f} [{v.min():.3f}, {v.max():.3f}]" for v in scores.values()]
        print(f"| {name} | {' | '.join(cells)} | {ratio:.2f} | {time.perf_counter() - start:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
