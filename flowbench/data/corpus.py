"""The corpus interface every data source implements.

Token ids run 0..vocab_size-1; families that need extra ids (a mask token, a BOS token)
append them after vocab_size themselves, so a corpus never reserves ids for a family.
"""
from __future__ import annotations

from typing import ClassVar

import torch


class CorpusError(ValueError):
    """Bad corpus configuration (one line, naming the culprit)."""


class Corpus:
    """Deterministic splits of fixed-length token sequences.

    Subclasses set `vocab_size` and `seq_len` and implement `split` and `decode`.
    A corpus that knows its own likelihood (the embedded language) also implements
    `log_prob`, `token_nll`, `entropy_rate` and `posterior`, and sets `exact = True`.
    """

    name: str = "corpus"
    vocab_size: int
    seq_len: int
    exact: bool = False
    version: ClassVar[int] = 1  # bump when the data change: it enters the model and row keys

    def split(self, name: str, n: int) -> torch.Tensor:
        """`n` sequences of split `name` ('train' | 'validation' | 'test'), LongTensor (n, L)."""
        raise NotImplementedError

    def decode(self, ids: torch.Tensor) -> str:
        """Text of one sequence of ids (L,)."""
        raise NotImplementedError

    def available(self, split: str) -> int | None:
        """How many sequences a split holds; None for a generator that makes any number."""
        return None

    def describe(self) -> dict:
        """Fields that identify the data (go into config hashes and result rows)."""
        return {"corpus": self.name, "vocab_size": self.vocab_size, "seq_len": self.seq_len}
