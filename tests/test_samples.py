"""A row's samples stored compactly: the same ids as the JSONL records they replace, a fraction
of the bytes, and read back by `score`; a finished folder's rows packed into one file read back
the same ids as the files the pack replaced."""
import json
import lzma

import pytest
import torch

from flowbench import samples as samples_module
from flowbench.__main__ import main
from flowbench.data.language import HMMLanguage
from flowbench.leaderboard import Leaderboard
from flowbench.samples import PACK, SamplesError, load_ids, read_pack, row_ids, save_ids

CORPUS = "{name: hmm_language, seq_len: 32, seed: 0}"


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


@pytest.fixture
def folder(tmp_path, legacy):
    """A finished results folder: rows in per-row files (two with the same samples, as a row and
    its oracle twin at the same sampling seed share them; one in 16 bits), a legacy JSONL row,
    and a samples file whose row is not in the CSV yet (a run still writing it). Returns the
    folder and row_key -> the ids each row's file holds."""
    language = HMMLanguage(seq_len=32, seed=0)
    board = Leaderboard(tmp_path / "run")
    ids = {"a00000000001": language.split("train", 64), "a00000000002": language.split("train", 64),
           "a00000000003": language.split("test", 32) * 7, "a00000000004": load_ids(legacy)}
    board.write_samples("a00000000001", ids["a00000000001"], vocab_size=256)
    board.write_samples("a00000000002", ids["a00000000002"], vocab_size=256)
    board.write_samples("a00000000003", ids["a00000000003"], vocab_size=2048)
    legacy.rename(board.samples_dir / "a00000000004.jsonl")
    board.write_samples("b00000000009", language.split("test", 8), vocab_size=256)
    for key in ids:
        board.append({"suite": "t", "row_key": key})
    return board.dir, ids


def row_files(results):
    return sorted(p.name for p in (results / "samples").iterdir())


def test_a_pack_gives_the_ids_of_the_files_it_replaced(folder):
    results, ids = folder
    as_files = sum((results / "samples" / f"{key}.npy.xz").stat().st_size for key in list(ids)[:3]) + \
        save_ids(results.parent / "legacy_row.npy.xz", ids["a00000000004"], vocab_size=256).stat().st_size
    pack = Leaderboard(results).pack_samples()
    assert pack == results / PACK
    assert row_files(results) == ["b00000000009.npy.xz"]  # the row not in the CSV is left to its run
    stored = read_pack(pack)
    assert sorted(stored) == sorted(ids)
    for key, expected in ids.items():
        assert torch.equal(row_ids(results, key), expected), key
        assert torch.equal(torch.from_numpy(stored[key].astype("int64")), expected), key
    assert stored["a00000000003"].dtype.itemsize == 2 and stored["a00000000004"].dtype.itemsize == 1
    assert pack.stat().st_size < as_files - 500  # the twin rows' samples are stored once


def test_packing_again_keeps_the_packed_rows_adds_new_ones_and_is_byte_for_byte_stable(folder):
    results, ids = folder
    board = Leaderboard(results)
    first = board.pack_samples().read_bytes()
    assert board.pack_samples().read_bytes() == first
    board.append({"suite": "t", "row_key": "b00000000009"})
    board.pack_samples()
    assert not (results / "samples").exists()
    assert sorted(read_pack(results / PACK)) == sorted([*ids, "b00000000009"])
    for key, expected in ids.items():
        assert torch.equal(row_ids(results, key), expected), key


def test_a_row_is_read_from_its_own_file_then_the_pack_then_its_jsonl(folder):
    results, ids = folder
    Leaderboard(results).pack_samples()
    newer = ids["a00000000001"].flip(0)
    save_ids(results / "samples" / "a00000000001.npy.xz", newer, vocab_size=256)
    (results / "samples" / "a00000000002.jsonl").write_text('{"ids": [1, 2]}\n')
    (results / "samples" / "c00000000001.jsonl").write_text('{"ids": [1, 2]}\n{"ids": [3, 4]}\n')
    assert torch.equal(row_ids(results, "a00000000001"), newer)
    assert torch.equal(row_ids(results, "a00000000002"), ids["a00000000002"])
    assert torch.equal(row_ids(results, "c00000000001"), torch.tensor([[1, 2], [3, 4]]))


def test_a_missing_row_or_a_corrupt_pack_fails_in_one_line_naming_it(folder):
    results, ids = folder
    Leaderboard(results).pack_samples()
    with pytest.raises(SamplesError, match="row c0ffee000000 ") as err:
        row_ids(results, "c0ffee000000")
    assert "\n" not in str(err.value)
    good = (results / PACK).read_bytes()
    for corrupt in (good[: len(good) // 2], b"not xz", lzma.compress(b"an xz stream of no zip")):
        (results / PACK).write_bytes(corrupt)
        with pytest.raises(SamplesError, match=PACK) as err:
            row_ids(results, "a00000000001")
        assert "\n" not in str(err.value)
    with pytest.raises(SamplesError, match=PACK):  # no repacking over a pack it cannot read
        Leaderboard(results).pack_samples()
    assert row_files(results) == ["b00000000009.npy.xz"]


def test_a_pack_that_does_not_read_back_removes_nothing(folder, monkeypatch):
    results, ids = folder
    before = row_files(results)

    def one_row_off(path):
        rows = read_pack(path)
        rows["a00000000003"] = rows["a00000000003"][:-1]
        return rows

    monkeypatch.setattr(samples_module, "read_pack", one_row_off)
    with pytest.raises(SamplesError, match="a00000000003"):
        Leaderboard(results).pack_samples()
    assert row_files(results) == before and sorted(p.name for p in results.iterdir()) == [
        ".leaderboard.lock", "leaderboard.csv", "samples"]
    monkeypatch.undo()
    for key, expected in ids.items():
        assert torch.equal(row_ids(results, key), expected), key


def test_score_reads_a_packed_row_as_it_read_its_file(folder, capsys):
    results, ids = folder
    scored = []
    for _ in range(2):  # the JSONL row in its file, then from the pack
        assert main(["score", str(results), "--row", "a00000000004", "--corpus", CORPUS, "--judge", "exact",
                     "--text", "1"]) == 0
        scored.append(json.loads(capsys.readouterr().out))
        Leaderboard(results).pack_samples()
    assert not (results / "samples" / "a00000000004.jsonl").exists()
    assert scored[0] == scored[1] and scored[1]["row_key"] == "a00000000004"
    assert scored[1]["num_samples"] == len(ids["a00000000004"])
    assert main(["score", str(results), "--corpus", CORPUS]) == 2
    assert "--row" in capsys.readouterr().err
    assert main(["score", str(results), "--row", "c0ffee000000", "--corpus", CORPUS]) == 2
    err = capsys.readouterr().err
    assert "c0ffee000000" in err and err.count("\n") == 1
