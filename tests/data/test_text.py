"""TextFiles / HubText: packing, splits, tokenizer cache, errors (all offline)."""
from __future__ import annotations

import random
import time
import types

import pytest
import torch

import flowbench.data.text as text_mod
from flowbench.data.corpus import CorpusError
from flowbench.data.text import EOS_TOKEN, SPLITS, HubText, TextFiles
from flowbench.registry import CORPORA

L = 16
_SUBJ = ["the cat", "a small dog", "my old friend", "the teacher", "every child", "the river", "a red bird"]
_VERB = ["sees", "likes", "follows", "draws", "remembers", "finds", "carries"]
_OBJ = ["the moon", "a green apple", "the quiet house", "some warm bread", "the long road", "a paper boat"]
_TAIL = ["today", "at night", "in the garden", "with great care", "before dinner", "again and again"]


def _lines(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        s = f"{rng.choice(_SUBJ)} {rng.choice(_VERB)} {rng.choice(_OBJ)} {rng.choice(_TAIL)}."
        out.append(s.capitalize() + (f" Story {i}." if i % 3 == 0 else ""))
    return out


@pytest.fixture
def corpus_dir(tmp_path):
    lines = _lines(300)
    root = tmp_path / "txt"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("\n".join(lines[:200]) + "\n\n", encoding="utf-8")  # blank lines are skipped
    (root / "sub" / "b.txt").write_text("\n".join(lines[200:]) + "\n", encoding="utf-8")
    (root / "notes.md").write_text("not a txt file\n", encoding="utf-8")
    return root, lines


def _make(root, cache, **kw):
    args = dict(paths=[str(root)], seq_len=L, vocab_size=300, cache_dir=cache, valid_fraction=0.1, test_fraction=0.1)
    args.update(kw)
    return TextFiles(**args)


def _stream(c, split):
    return c.split(split, c.n_chunks(split)).flatten()


def _interior_docs(c, split) -> list[str]:
    """Whole documents recovered from the decoded stream (the pieces between two EOS)."""
    return c.decode(_stream(c, split)).split(EOS_TOKEN)[1:-1]


def test_registered():
    # checked without load_builtins(), so the other built-in modules do not matter here
    assert CORPORA._entries["text_files"] is TextFiles and CORPORA._entries["hub_text"] is HubText
    assert (TextFiles.name, HubText.name) == ("text_files", "hub_text")


def test_split_shapes_dtype_and_range(corpus_dir, tmp_path):
    root, _ = corpus_dir
    c = _make(root, tmp_path / "cache")
    assert 257 <= c.vocab_size <= 300 and c.vocab_size == c._tok.get_vocab_size()
    for s in SPLITS:
        m = c.n_chunks(s)
        assert m > 0
        x = c.split(s, m)
        assert x.shape == (m, L) and x.dtype == torch.long
        assert int(x.min()) >= 0 and int(x.max()) < c.vocab_size
        assert torch.equal(c.split(s, 2), x[:2])  # first n chunks, always the same ones
    assert c.n_chunks("train") > 5 * c.n_chunks("validation")
    d = c.describe()
    assert d["corpus"] == "text_files" and d["seq_len"] == L and d["eos_id"] == c.eos_id and d["data_hash"]


def test_packing_convention(corpus_dir, tmp_path):
    root, _ = corpus_dir
    c = _make(root, tmp_path / "cache")
    for s in SPLITS:
        expected = []
        for doc in c.documents(s):
            ids = c.encode(doc)
            assert c.eos_id not in ids
            expected += ids + [c.eos_id]
        got = _stream(c, s).tolist()
        assert len(got) == (len(expected) // L) * L  # only the last partial chunk is dropped
        assert got == expected[: len(got)]


def test_eos_marks_document_boundaries(corpus_dir, tmp_path):
    root, lines = corpus_dir
    c = _make(root, tmp_path / "cache")
    docs = c.documents("train")
    stream = _stream(c, "train")
    eos = (stream == c.eos_id).nonzero().flatten().tolist()
    assert len(eos) >= 3
    assert c.decode(stream[: eos[0]]) == docs[0]
    assert c.decode(stream[eos[0] + 1 : eos[1]]) == docs[1]
    assert c.decode(stream[: eos[1] + 1]) == docs[0] + EOS_TOKEN + docs[1] + EOS_TOKEN
    # every whole document in the stream is one of the file's lines
    assert set(_interior_docs(c, "train")) <= set(lines)


def test_decode_encode_roundtrip(corpus_dir, tmp_path):
    root, lines = corpus_dir
    c = _make(root, tmp_path / "cache")
    for doc in lines[:20] + ["naïve café — 日本語 ✓", "  two  spaces\tand a tab", "text <|endoftext|> text"]:
        assert c.decode(c.encode(doc)) == doc
    assert c.eos_id not in c.encode("a literal <|endoftext|> stays text")


def test_splits_disjoint_and_cover_all_documents(corpus_dir, tmp_path):
    root, lines = corpus_dir
    c = _make(root, tmp_path / "cache")
    docs = {s: c.documents(s) for s in SPLITS}
    assert sorted(docs["train"] + docs["validation"] + docs["test"]) == sorted(lines)
    for a, b in [("train", "validation"), ("train", "test"), ("validation", "test")]:
        assert not set(docs[a]) & set(docs[b])
        assert not set(_interior_docs(c, a)) & set(_interior_docs(c, b))  # checked on the streams too
    for s in SPLITS:
        assert set(_interior_docs(c, s)) <= set(docs[s])
    # deterministic for a seed, different for another seed
    assert _make(root, tmp_path / "c2").documents("validation") == docs["validation"]
    assert _make(root, tmp_path / "c3", seed=1).documents("validation") != docs["validation"]


def test_one_doc_per_file(tmp_path):
    root = tmp_path / "files"
    root.mkdir()
    contents = [" ".join(_lines(8, seed=i)) + "\n" for i in range(6)]
    for i, t in enumerate(contents):
        (root / f"d{i}.txt").write_text(t, encoding="utf-8")
    c = TextFiles(paths=[str(root / "d*.txt")], seq_len=L, vocab_size=300, one_doc_per="file",
                  cache_dir=tmp_path / "cache", valid_fraction=0.0, test_fraction=0.0)
    assert c.documents("train") == contents and c.n_chunks("validation") == 0
    stream = torch.cat([torch.tensor(c.encode(t) + [c.eos_id]) for t in contents])
    assert torch.equal(_stream(c, "train"), stream[: c.n_chunks("train") * L])


def test_tokenizer_and_streams_cached(corpus_dir, tmp_path, monkeypatch):
    root, _ = corpus_dir
    cache = tmp_path / "cache"
    first = _make(root, cache)
    tok_files = list((cache / "tokenizers").glob("*.json"))
    assert tok_files == [first.tokenizer_path] and first.stream_path.exists()
    mtimes = (first.tokenizer_path.stat().st_mtime_ns, first.stream_path.stat().st_mtime_ns)

    def no_training(*a, **k):
        raise AssertionError("tokenizer retrained despite the cache")

    def no_encoding(self):
        raise AssertionError("streams re-encoded despite the cache")

    monkeypatch.setattr(text_mod, "_train_tokenizer", no_training)
    monkeypatch.setattr(TextFiles, "_build_streams", no_encoding)
    second = _make(root, cache)
    assert torch.equal(second.split("train", 4), first.split("train", 4))
    assert (first.tokenizer_path.stat().st_mtime_ns, first.stream_path.stat().st_mtime_ns) == mtimes
    assert list((cache / "tokenizers").glob("*.json")) == tok_files
    assert second.describe() == first.describe()
    with pytest.raises(AssertionError, match="retrained"):  # a different vocab needs a new tokenizer
        _make(root, cache, vocab_size=290)


def test_missing_path_raises(corpus_dir, tmp_path):
    root, _ = corpus_dir
    missing = str(tmp_path / "nowhere" / "gone.txt")
    with pytest.raises(CorpusError, match="gone.txt") as info:
        _make(root, tmp_path / "cache", paths=[str(root), missing])
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    with pytest.raises(CorpusError, match="nomatch"):
        _make(root, tmp_path / "cache", paths=[str(tmp_path / "nomatch*.txt")])


def test_unfillable_n_raises(corpus_dir, tmp_path):
    root, _ = corpus_dir
    c = _make(root, tmp_path / "cache")
    m = c.n_chunks("validation")
    assert c.split("validation", m).shape == (m, L)
    with pytest.raises(CorpusError) as info:
        c.split("validation", m + 1)
    msg = str(info.value)
    assert f"L={L}" in msg and f"n={m + 1}" in msg and f"only {m} chunks" in msg and "'validation'" in msg
    with pytest.raises(CorpusError, match="unknown split"):
        c.split("dev", 1)


def test_hub_text_offline_fails_fast(tmp_path, monkeypatch):
    import datasets  # noqa: F401  imported first: the flag must work even when set after the import
    import transformers  # noqa: F401

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    t0 = time.monotonic()
    with pytest.raises(CorpusError) as info:
        HubText(dataset="roneneldan/TinyStories", seq_len=L, cache_dir=tmp_path, max_documents=100)
    assert time.monotonic() - t0 < 10
    msg = str(info.value)
    assert "'roneneldan/TinyStories'" in msg and "offline" in msg and "text_files" in msg and "\n" not in msg


@pytest.fixture
def fake_hub(corpus_dir, tmp_path, monkeypatch):
    """A local tokenizer and dataset standing in for the hub (the packing and split logic are real)."""
    from transformers import PreTrainedTokenizerFast

    root, lines = corpus_dir
    base = _make(root, tmp_path / "tokcache")
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(base.tokenizer_path), eos_token=EOS_TOKEN)
    monkeypatch.setattr(text_mod, "_load_gpt2_tokenizer", lambda local_only: tok)
    calls: list[bool] = []  # the `streaming` argument of each load
    revisions: list[str] = []

    def use(dd):
        def load(name, subset, streaming, revision):
            calls.append(streaming)
            revisions.append(revision)
            return dd

        monkeypatch.setattr(text_mod, "_load_hub_dataset", load)
        return calls

    use.revisions = revisions
    return base, lines, use


def _packed(base, docs):
    return [t for d in docs for t in base.encode(d) + [base.eos_id]]


def test_hub_text_tail_of_train(fake_hub, tmp_path):
    import datasets

    base, lines, use = fake_hub
    use(datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": lines[:200]})}))
    c = HubText(dataset="local/fake", seq_len=L, cache_dir=tmp_path / "hub")
    assert c.eos_id == base.eos_id and c.vocab_size == base.vocab_size
    # 5% of 200 rows = 10 rows each for the missing validation and test splits
    for s, docs in [("train", lines[:180]), ("validation", lines[180:190]), ("test", lines[190:200])]:
        got = _stream(c, s).tolist()
        assert got == _packed(base, docs)[: len(got)] and len(got) > 0
    assert c.decode(c.split("validation", 1)[0]).startswith(lines[180][:5])


def test_hub_text_revision_reaches_the_hub_and_the_cache_key(fake_hub, tmp_path):
    """A dataset revision is asked of the hub and keys the packed stream: another revision of
    the same dataset never reuses a stream cached for the first."""
    import datasets

    base, lines, use = fake_hub
    use(datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": lines[:200]})}))
    main = HubText(dataset="local/fake", seq_len=L, cache_dir=tmp_path / "hub")
    pinned = HubText(dataset="local/fake", seq_len=L, cache_dir=tmp_path / "hub", revision="abc123")
    assert use.revisions == ["main", "abc123"]  # built twice: no shared cache entry
    assert main.stream_path != pinned.stream_path
    assert main.describe()["revision"] == "main" and pinned.describe()["revision"] == "abc123"
    assert text_mod._HUB_TOKENIZER_REVISION in main.describe()["tokenizer"]


def test_hub_tokenizer_is_pinned_to_a_commit(monkeypatch):
    import transformers

    seen = {}
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda name, **kw: seen.update(name=name, **kw) or types.SimpleNamespace())
    text_mod._load_gpt2_tokenizer(local_only=True)
    assert seen["revision"] == text_mod._HUB_TOKENIZER_REVISION and len(seen["revision"]) == 40


def test_hub_text_streaming_own_splits(fake_hub, tmp_path):
    import datasets

    base, lines, use = fake_hub
    train = datasets.Dataset.from_dict({"text": lines[:200]}).to_iterable_dataset()
    valid = datasets.Dataset.from_dict({"text": lines[200:300]}).to_iterable_dataset()
    calls = use(datasets.IterableDatasetDict({"train": train, "validation": valid}))
    c = HubText(dataset="local/fake", seq_len=L, cache_dir=tmp_path / "hub", max_documents=60)
    assert calls == [True]
    for s, docs in [("train", lines[:57]), ("test", lines[57:60]), ("validation", lines[200:260])]:
        got = _stream(c, s).tolist()
        assert got == _packed(base, docs)[: len(got)] and len(got) > 0
    with pytest.raises(CorpusError, match="no field 'story'"):
        HubText(dataset="local/fake", seq_len=L, cache_dir=tmp_path / "hub2", text_field="story", max_documents=60)


def test_hub_text_offline_dataset_fails_fast(fake_hub, tmp_path, monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    # libraries imported while the flag was off read it once; HubText must still honour it when set later
    for mod, attr in [(datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE"),
                      (huggingface_hub.constants, "HF_HUB_OFFLINE")]:
        monkeypatch.setattr(mod, attr, False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # tokenizer is local (fake_hub); the dataset is not
    t0 = time.monotonic()
    with pytest.raises(CorpusError, match="'roneneldan/TinyStories' is not reachable offline.*dataset"):
        HubText(dataset="roneneldan/TinyStories", seq_len=L, cache_dir=tmp_path / "hub", max_documents=50)
    assert time.monotonic() - t0 < 10
