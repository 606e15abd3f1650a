"""A row's samples stored compactly: the same ids as the JSONL records they replace, a fraction
of the bytes, and read back by `score`."""
import json
import pytest
import torch

from flowbench.__main__ import main
from flowbench.data.language import HMMLanguage
from flowbench.samples import SamplesError, load_ids, save_ids


@pytest.fixture
def legacy(tmp_path):
    """A row's samples in the format runs wrote before: JSONL records of text and ids."""
    language = HMMLanguage(seq_len=32, seed=0)
    path = tmp_path / "legacy.jsonl"
    path.write_text("".join(json.dumps({"text": language.decode(t), "ids": t.tolist()}) + "\n"
                            for t in language.split("validation", 256)))
    return path


def test_compact_file_gives_the_ids_of_the_jsonl_it_replaces(tmp_path, legacy):
    records = [json.loads(line) for line in legacy.read_text().splitlines()]
    ids = torch.tensor([r["ids"] for r in records])
    compact = save_ids(tmp_path / "row.npy.xz", ids, vocab_size=256)
    assert torch.equal(load_ids(compact), ids) and torch.equal(load_ids(legacy), ids)
    assert compact.stat().st_size < legacy.stat().st_size / 5
    wide = save_ids(tmp_path / "wide.npy.xz", ids * 7, vocab_size=2048)  # uint16 past 256 words
    assert torch.equal(load_ids(wide), ids * 7)


def test_out_of_vocabulary_and_corrupt_files_fail_in_one_line(tmp_path):
    with pytest.raises(SamplesError, match="0..255"):
        save_ids(tmp_path / "x.npy.xz", torch.tensor([[0, 256]]), vocab_size=256)
    assert not (tmp_path / "x.npy.xz").exists()
    bad = tmp_path / "bad.npy.xz"
    bad.write_bytes(b"not lzma")
    with pytest.raises(SamplesError, match="bad.npy.xz"):
        load_ids(bad)


def test_score_reads_a_compact_file_as_it_reads_its_jsonl(tmp_path, legacy, capsys):
    ids = load_ids(legacy)
    compact = save_ids(tmp_path / "row.npy.xz", ids, vocab_size=256)
    corpus = "{name: hmm_language, seq_len: 32, seed: 0}"
    rows = []
    for path in (legacy, compact):
        assert main(["score", str(path), "--corpus", corpus, "--judge", "exact", "--text", "2"]) == 0
        rows.append(json.loads(capsys.readouterr().out))
    assert rows[0].pop("samples") != rows[1].pop("samples")
    assert rows[0] == rows[1] and len(rows[1]["text"]) == 2
    assert rows[1]["text"][0] == json.loads(legacy.read_text().splitlines()[0])["text"]
