"""Corpora of real text: local files (`text_files`) and Hugging Face hub datasets (`hub_text`).

Packing convention (both corpora)
---------------------------------
Each document is tokenized on its own and followed by exactly one EOS id (`<|endoftext|>`).
The documents of a split are concatenated in a fixed order into one token stream, and the
stream is cut into consecutive, non-overlapping chunks of `seq_len` tokens; the last partial
chunk is dropped. `split(name, n)` returns the first `n` chunks as a LongTensor (n, seq_len)
and fails with a CorpusError when the split has fewer than `n` chunks. A chunk may start or
end inside a document and may hold several documents. EOS is an ordinary token: models
predict it and judges score it like any other id. A literal "<|endoftext|>" inside a
document is tokenized as plain text, so EOS ids occur only at document boundaries.

text_files
    Documents are the non-blank lines (`one_doc_per="line"`) or the whole contents
    (`one_doc_per="file"`) of the given .txt files, read in path order. A document goes to
    train / validation / test by a hash of (seed, document text): deterministic, adding files
    never moves an existing document, and identical documents share a split (no duplicate
    leakage). The byte-level BPE is trained on the train documents only and cached as
    `cache_dir/tokenizers/<key>.json`, the packed streams in `cache_dir/streams/`; the key
    covers file paths, sizes and mtimes and every argument that changes the data.

hub_text
    A dataset from the Hugging Face hub, tokenized with the GPT-2 tokenizer (EOS id 50256) at a
    pinned hub commit. The dataset's `revision` (a branch, tag or commit; default "main", which
    moves: give a commit for results that must not) is part of the stream cache key.
    Validation/test come from the dataset's own splits when present, otherwise from a
    deterministic tail of train. Needs the hub (or a filled local HF cache); offline it fails
    fast with a one-line CorpusError.
"""
from __future__ import annotations

import array
import glob
import hashlib
import itertools
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch

from flowbench.data.corpus import Corpus, CorpusError
from flowbench.registry import CORPORA

SPLITS = ("train", "validation", "test")
EOS_TOKEN = "<|endoftext|>"
_FORMAT = 1  # bump when the cache layout or the packing convention changes
_BATCH = 1000  # documents per tokenizer call
_MIN_BPE_VOCAB = 257  # 256 byte symbols + EOS
_HUB_TOKENIZER = "gpt2"
_HUB_TOKENIZER_REVISION = "607a30d783dfa663caf39e06633721c8d4cfcd7e"  # a hub commit: the vocabulary never moves
_TAIL_FRACTION = 0.05  # share of hub train rows carved off per missing validation/test split
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:20]


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write via a temp file in the same directory, then os.replace (readers never see halves)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _batched(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


def _pack(token_lists: Iterable[Sequence[int]], eos_id: int) -> torch.Tensor:
    """Concatenate documents, each followed by one EOS, into an int32 stream."""
    buf = array.array("i")
    for ids in token_lists:
        buf.extend(ids)
        buf.append(eos_id)
    return torch.frombuffer(buf, dtype=torch.int32).clone() if buf else torch.zeros(0, dtype=torch.int32)


def _int_arg(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CorpusError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise CorpusError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")


def _id_list(ids) -> list[int]:
    return ids.tolist() if isinstance(ids, torch.Tensor) else [int(i) for i in ids]


class _PackedText(Corpus):
    """Shared split/chunk logic over one cached int32 stream per split."""

    eos_id: int
    data_hash: str
    _streams: dict[str, torch.Tensor]
    _fields: dict  # constructor arguments that identify the data, for describe()

    def n_chunks(self, split: str) -> int:
        """Number of whole seq_len chunks in `split`."""
        _check_split(split)
        return int(self._streams[split].numel()) // self.seq_len

    def available(self, split: str) -> int:
        return self.n_chunks(split)

    def split(self, name: str, n: int) -> torch.Tensor:
        m, n = self.n_chunks(name), _int_arg("number of sequences n", n, minimum=0)
        if n > m:
            raise CorpusError(f"sequence length L={self.seq_len} cannot fill n={n} sequences: "
                              f"split {name!r} has only {m} chunks")
        return self._streams[name][: n * self.seq_len].view(n, self.seq_len).long()

    def _load_streams(self, path: Path, build: Callable[[], dict[str, torch.Tensor]]) -> None:
        if path.exists():
            try:
                payload = torch.load(path, weights_only=True)
                if payload.get("format") == _FORMAT:
                    self._streams = {s: payload[s] for s in SPLITS}
                    self.data_hash = payload["data_hash"]
                    return
            except Exception:  # unreadable or stale cache: rebuild below
                pass
        streams = build()
        h = hashlib.sha256()
        for s in SPLITS:
            h.update(s.encode())
            h.update(streams[s].numpy().tobytes())
        payload = {"format": _FORMAT, **streams, "data_hash": h.hexdigest()[:20]}
        _atomic_write(path, lambda tmp: torch.save(payload, tmp))
        self._streams, self.data_hash = streams, payload["data_hash"]

    def describe(self) -> dict:
        return {**super().describe(), "eos_id": self.eos_id, "data_hash": self.data_hash, **self._fields}


# --------------------------------------------------------------------------- text_files
def _resolve_paths(paths) -> list[Path]:
    """Files, directories (all .txt below) and globs -> ordered, de-duplicated files."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise CorpusError("text_files needs at least one path")

    def expand(p: Path) -> list[Path]:
        if p.is_dir():
            return sorted(f for f in p.rglob("*.txt") if f.is_file())
        return [p] if p.is_file() else []

    out: dict[Path, None] = {}  # ordered set
    for raw in paths:
        text = os.path.expanduser(str(raw))
        if any(c in text for c in "*?["):
            why = "matches no files"
            files = [f for m in sorted(glob.glob(text, recursive=True)) for f in expand(Path(m))]
        elif not os.path.exists(text):
            raise CorpusError(f"text_files path {text!r} does not exist")
        else:
            files, why = expand(Path(text)), "contains no .txt files"
        if not files:
            raise CorpusError(f"text_files path {text!r} {why}")
        out.update(dict.fromkeys(f.resolve() for f in files))
    return list(out)


def _train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Byte-level BPE (ByteLevel pre-tokenizer and decoder, EOS as the only special token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


@CORPORA.register("text_files")
class TextFiles(_PackedText):
    """Local .txt files, byte-level BPE trained offline, packed as in the module docstring."""

    def __init__(self, *, paths: list[str], seq_len: int, vocab_size: int = 1024, one_doc_per: str = "line",
                 cache_dir: str | Path, valid_fraction: float = 0.05, test_fraction: float = 0.05, seed: int = 0):
        self.seq_len = _int_arg("seq_len", seq_len)
        self.requested_vocab_size = _int_arg("vocab_size", vocab_size, _MIN_BPE_VOCAB)
        if one_doc_per not in ("line", "file"):
            raise CorpusError(f"one_doc_per must be 'line' or 'file', got {one_doc_per!r}")
        fractions = (valid_fraction, test_fraction)
        if any(not 0 <= f < 1 for f in fractions) or sum(fractions) >= 1:
            raise CorpusError(f"valid_fraction={valid_fraction} and test_fraction={test_fraction} "
                              f"must be >= 0 and sum below 1")
        self.files = _resolve_paths(paths)
        self.one_doc_per, self.seed = one_doc_per, int(seed)
        self.valid_fraction, self.test_fraction = float(valid_fraction), float(test_fraction)
        self._fields = {"one_doc_per": one_doc_per, "seed": self.seed, "valid_fraction": self.valid_fraction,
                        "test_fraction": self.test_fraction, "requested_vocab_size": vocab_size}
        stats = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in self.files]
        # a subclass that reads other documents from the same files gets keys of its own
        key = _digest(self.name, _FORMAT, stats, vocab_size, one_doc_per, self.seed,
                      self.valid_fraction, self.test_fraction, *self._key_extra())
        cache = Path(cache_dir)
        self.tokenizer_path = cache / "tokenizers" / f"{key}.json"
        self.stream_path = cache / "streams" / f"{self.name}-{key}.pt"
        self._tok = self._load_or_train_tokenizer()
        self._tok.encode_special_tokens = True  # a literal "<|endoftext|>" in text stays text
        self.eos_id = self._tok.token_to_id(EOS_TOKEN)
        self.vocab_size = self._tok.get_vocab_size()
        self._load_streams(self.stream_path, self._build_streams)

    def _key_extra(self) -> tuple:
        return ()

    def _iter_all(self) -> Iterator[str]:
        for f in self.files:
            try:
                with open(f, encoding="utf-8") as fh:  # blank lines / blank files are no documents
                    docs = [fh.read()] if self.one_doc_per == "file" else (line.rstrip("\n") for line in fh)
                    yield from (d for d in docs if d.strip())
            except UnicodeDecodeError as err:
                raise CorpusError(f"text_files file {str(f)!r} is not valid UTF-8 "
                                  f"({err.reason} at byte {err.start})") from None

    def split_of(self, text: str) -> str:
        """Split a document belongs to: a hash of (seed, text), so the choice is stable."""
        digest = hashlib.blake2b(f"{self.seed}\0{text}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
        u = int.from_bytes(digest, "big") / 2.0**64
        if u < self.test_fraction:
            return "test"
        return "validation" if u < self.test_fraction + self.valid_fraction else "train"

    def _docs(self, split: str) -> Iterator[str]:
        return (d for d in self._iter_all() if self.split_of(d) == split)

    def documents(self, split: str) -> list[str]:
        """The documents of `split`, in packing order (re-read from the files)."""
        _check_split(split)
        return list(self._docs(split))

    def _load_or_train_tokenizer(self):
        from tokenizers import Tokenizer

        if self.tokenizer_path.exists():
            try:
                return Tokenizer.from_file(str(self.tokenizer_path))
            except Exception:  # corrupt cache file: retrain below
                pass
        train_docs = self._docs("train")
        first = next(train_docs, None)
        if first is None:
            raise CorpusError(f"text_files {[str(f) for f in self.files][:3]} yield no train documents")
        tok = _train_tokenizer(itertools.chain([first], train_docs), self.requested_vocab_size)
        _atomic_write(self.tokenizer_path, lambda tmp: tok.save(tmp))
        return tok

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no EOS appended)."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        return self._tok.decode(_id_list(ids), skip_special_tokens=False)

    def _build_streams(self) -> dict[str, torch.Tensor]:
        """One pass over the files per split (reading is cheap next to encoding)."""
        def encoded(split: str) -> Iterator[list[int]]:
            for batch in _batched(self._docs(split), _BATCH):
                yield from (e.ids for e in self._tok.encode_batch(batch, add_special_tokens=False))

        return {s: _pack(encoded(s), self.eos_id) for s in SPLITS}


# --------------------------------------------------------------------------- hub_text
def _offline_flag() -> str | None:
    """The first HF offline environment variable that is switched on, if any."""
    for var in _OFFLINE_VARS:
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return var
    return None


@contextmanager
def _hub_offline(on: bool):
    """Honour an offline flag set after `datasets`/`huggingface_hub` were imported (they read it once)."""
    if not on:
        yield
        return
    import datasets.config
    import huggingface_hub.constants as hub_constants

    saved = (hub_constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE)
    hub_constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE = saved


def _load_gpt2_tokenizer(local_only: bool):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(_HUB_TOKENIZER, revision=_HUB_TOKENIZER_REVISION,
                                        local_files_only=local_only)
    tok.model_max_length = sys.maxsize  # documents are packed, never truncated; silences length warnings
    return tok


def _load_hub_dataset(name: str, subset: str | None, streaming: bool, revision: str):
    import datasets

    return datasets.load_dataset(name, subset, streaming=streaming, revision=revision)


@CORPORA.register("hub_text")
class HubText(_PackedText):
    """A Hugging Face hub dataset with the GPT-2 tokenizer, packed as in the module docstring.

    `max_documents` caps the rows read per split and switches to streaming, so big sets
    (openwebtext) only download what is used. Without it the whole dataset is loaded.
    """

    def __init__(self, *, dataset: str, seq_len: int, cache_dir: str | Path, subset: str | None = None,
                 text_field: str = "text", max_documents: int | None = None, revision: str = "main"):
        self.seq_len = _int_arg("seq_len", seq_len)
        if max_documents is not None:
            _int_arg("max_documents", max_documents)
        self.dataset, self.subset, self.text_field, self.max_documents = dataset, subset, text_field, max_documents
        self.revision = revision
        self._fields = {"dataset": dataset, "subset": subset, "text_field": text_field, "revision": revision,
                        "max_documents": max_documents, "tokenizer": f"{_HUB_TOKENIZER}@{_HUB_TOKENIZER_REVISION}"}
        flag = _offline_flag()
        try:
            with _hub_offline(flag is not None):
                self._tok = _load_gpt2_tokenizer(local_only=flag is not None)
        except Exception as err:
            raise self._failure(flag, err, f"the {_HUB_TOKENIZER} tokenizer is not in the local cache") from err
        self.eos_id = int(self._tok.eos_token_id)
        self.vocab_size = len(self._tok)
        key = _digest("hub_text", _FORMAT, dataset, subset, revision, text_field, max_documents, _HUB_TOKENIZER,
                      _HUB_TOKENIZER_REVISION, self.vocab_size)
        self.stream_path = Path(cache_dir) / "streams" / f"hub_text-{key}.pt"
        self._load_streams(self.stream_path, lambda: self._build_streams(flag))

    def _failure(self, flag: str | None, err: Exception, what: str) -> CorpusError:
        if flag is not None:
            return CorpusError(f"hub dataset {self.dataset!r} is not reachable offline ({flag}=1; {what}); "
                               f"use corpus text_files with local files")
        first = (str(err).strip().splitlines() or [""])[0]
        return CorpusError(f"hub dataset {self.dataset!r} could not be loaded ({type(err).__name__}: {first})")

    def _texts(self, rows: Iterable[dict]) -> Iterator[str]:
        for row in rows:
            if self.text_field not in row:
                raise CorpusError(f"hub dataset {self.dataset!r} has no field {self.text_field!r} "
                                  f"(fields: {', '.join(row)})")
            text = row[self.text_field]
            if isinstance(text, str) and text.strip():
                yield text

    @staticmethod
    def _rows(rows, start: int, stop: int | None):
        if isinstance(rows, list):
            return rows[start:stop]
        if hasattr(rows, "select") and hasattr(rows, "__len__"):  # map-style Dataset
            n = len(rows)
            return rows.select(range(min(start, n), n if stop is None else min(stop, n)))
        return itertools.islice(rows, start, stop)  # IterableDataset

    def _sources(self, dd) -> dict[str, Iterable[dict]]:
        """Rows per split: own validation/test when present, else a deterministic tail of train."""
        if "train" not in dd:
            raise CorpusError(f"hub dataset {self.dataset!r} has no 'train' split (splits: {', '.join(dd)})")
        own = {"validation": next((k for k in ("validation", "valid", "dev") if k in dd), None),
               "test": "test" if "test" in dd else None}
        missing = [s for s in ("validation", "test") if own[s] is None]
        cap = self.max_documents
        train = dd["train"]
        if hasattr(train, "select") and hasattr(train, "__len__"):
            total = len(train) if cap is None else min(cap, len(train))
        else:  # streaming: cap is set, so the rows fit in memory
            train = list(itertools.islice(train, cap))
            total = len(train)
        k = max(1, int(total * _TAIL_FRACTION)) if missing else 0
        end = total - k * len(missing)
        if end < 1:
            raise CorpusError(f"hub dataset {self.dataset!r} has only {total} train rows; too few to carve "
                              f"{', '.join(missing)} from its tail")
        sources = {"train": self._rows(train, 0, end)}
        for i, s in enumerate(missing):
            sources[s] = self._rows(train, end + i * k, end + (i + 1) * k)
        for s in ("validation", "test"):
            if own[s] is not None:
                sources[s] = self._rows(dd[own[s]], 0, cap)
        return sources

    def _encode(self, texts: Iterable[str]) -> Iterator[list[int]]:
        for batch in _batched(texts, _BATCH):
            yield from self._tok(batch, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def _build_streams(self, flag: str | None) -> dict[str, torch.Tensor]:
        streaming = self.max_documents is not None and flag is None
        try:
            with _hub_offline(flag is not None):
                dd = _load_hub_dataset(self.dataset, self.subset, streaming, self.revision)
                sources = self._sources(dd)
                return {s: _pack(self._encode(self._texts(sources[s])), self.eos_id) for s in SPLITS}
        except CorpusError:
            raise
        except Exception as err:
            raise self._failure(flag, err, "the dataset is not in the local cache") from err

    def decode(self, ids) -> str:
        return self._tok.decode(_id_list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)
