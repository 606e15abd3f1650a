"""A row's samples on disk: its (N, L) token ids, compact, with text decoded on demand.

    samples/<row_key>.npy.xz   one row: the ids as a .npy array of the narrowest unsigned type that
                               holds the vocabulary (uint8 up to 256 words), LZMA-compressed. Runs
                               write these: one file per row, so concurrent workers never share one.
    samples.npz.xz             a finished folder's rows packed beside its leaderboard: an
                               uncompressed .npz of <row_key> -> (N, L) array, in one xz stream
    samples/<row_key>.jsonl    rows written before either format: {"text", "ids"} records

`row_ids(results_dir, row_key)` is how every reader gets a row's ids: from its own file, else the
pack, else its legacy JSONL file. `pack_samples(results_dir, row_keys)` (through
`Leaderboard.pack_samples`) packs a finished folder, then removes the per-row files, once the
pack has read back every row identically; scripts/recompute_references.sh packs each reference.

Why a pack: rows of one folder share content (the same sampling seeds at every NFE, oracle rows
repeated across families), which one stream compresses together and per-row files cannot.
nfe_sweep's 428 rows: 3.45 MB as per-row files; packed, 1.85 MB with xz (LZMA2 preset 9e with
lc=4, pb=0, since ids are bytes with no 4-byte alignment), 1.90 MB with xz's defaults, 2.14 MB
with zstd -22 --long, 2.69 MB with bz2 (ids of 4.2 bits of entropy each leave little more).

Ids are what every metric reads; text is the corpus's decoding of them, so it is not stored
(`python -m flowbench score` and the reports decode with the corpus).
"""
from __future__ import annotations

import io
import json
import lzma
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

SUFFIX = ".npy.xz"
LEGACY_SUFFIX = ".jsonl"
PACK = "samples.npz.xz"
# pb=0: ids have no 4-byte structure; lc=4: a byte is coded in the context of the high 4 bits of the one before
PACK_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "lc": 4, "lp": 0, "pb": 0}]
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # a fixed member time: the same rows make the same pack, byte for byte


class SamplesError(ValueError):
    """A samples file that cannot be read (one line naming the file)."""


def narrowest_dtype(vocab_size: int) -> np.dtype:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise SamplesError(f"vocabulary of {vocab_size} ids does not fit 32 bits")


def save_ids(path: str | Path, ids: torch.Tensor, *, vocab_size: int) -> Path:
    """Write (N, L) ids to `path` (atomically: a killed write leaves no half file)."""
    path = Path(path)
    array = ids.cpu().numpy()
    if array.ndim != 2 or (array.size and (array.min() < 0 or array.max() >= vocab_size)):
        raise SamplesError(f"{path.name}: ids must be (N, L) in 0..{vocab_size - 1}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(lzma.compress(_npy_bytes(array.astype(narrowest_dtype(vocab_size))),
                                  preset=9 | lzma.PRESET_EXTREME))
    os.replace(tmp, path)
    return path


def load_ids(path: str | Path) -> torch.Tensor:
    """(N, L) int64 ids of one row's file in either format (.npy.xz, or legacy .jsonl records)."""
    return _as_ids(_file_array(Path(path)))


def row_ids(results_dir: str | Path, row_key: str) -> torch.Tensor:
    """(N, L) int64 ids of a row of a results folder: from samples/<row_key>.npy.xz, else the
    folder's pack, else samples/<row_key>.jsonl."""
    results_dir = Path(results_dir)
    return _as_ids(_row_array(results_dir, row_key, _PackReader(results_dir / PACK)))


def pack_samples(results_dir: str | Path, row_keys: list[str]) -> Path:
    """Pack the rows `row_keys` (and any the pack already holds) into `<results_dir>/samples.npz.xz`,
    then remove their per-row files. The pack is written beside, read back and compared row by row
    before it replaces the old one and before any per-row file goes."""
    results_dir = Path(results_dir)
    path, old = results_dir / PACK, _PackReader(results_dir / PACK)
    keys = list(dict.fromkeys([*row_keys, *old.keys()]))
    rows = {key: _row_array(results_dir, key, old) for key in keys}
    tmp = path.with_name(path.name + ".tmp")
    _write_synced(tmp, lzma.compress(_npz_bytes(rows), format=lzma.FORMAT_XZ, filters=PACK_FILTERS))
    _check_same(read_pack(tmp), rows, tmp)
    os.replace(tmp, path)
    _sync_dir(results_dir)
    _remove_row_files(results_dir / "samples", keys)
    return path


def read_pack(path: str | Path) -> dict[str, np.ndarray]:
    """row_key -> (N, L) ids (as stored) of every row of a pack."""
    path = Path(path)
    try:
        npz = np.load(io.BytesIO(lzma.decompress(path.read_bytes())), allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("one array, not an .npz of rows")
        with npz:
            return {key: npz[key] for key in npz.files}
    except (lzma.LZMAError, zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise SamplesError(f"{path}: not a samples pack ({_one_line(err)})") from None


class _PackReader:
    """A folder's pack, read once on first use (most reads find a per-row file first)."""

    def __init__(self, path: Path):
        self.path = path
        self._rows: dict[str, np.ndarray] | None = None

    def rows(self) -> dict[str, np.ndarray]:
        if self._rows is None:
            self._rows = read_pack(self.path) if self.path.exists() else {}
        return self._rows

    def keys(self) -> list[str]:
        return list(self.rows())


def _row_array(results_dir: Path, row_key: str, pack: _PackReader) -> np.ndarray:
    """The stored ids of a row, looked up in the order `row_ids` documents."""
    own = results_dir / "samples" / f"{row_key}{SUFFIX}"
    if own.exists():
        return _file_array(own)
    if row_key in pack.rows():
        return pack.rows()[row_key]
    legacy = results_dir / "samples" / f"{row_key}{LEGACY_SUFFIX}"
    if legacy.exists():
        return _file_array(legacy)
    raise SamplesError(f"{results_dir}: no samples of row {row_key} (neither samples/{row_key}{SUFFIX}, "
                       f"a row of {PACK} nor samples/{row_key}{LEGACY_SUFFIX})")


def _file_array(path: Path) -> np.ndarray:
    """The ids of one row's file, as stored (JSONL ids in the narrowest type that holds them)."""
    if not path.is_file():
        raise SamplesError(f"samples file not found: {path}")
    if path.name.endswith(LEGACY_SUFFIX):
        return _jsonl_array(path)
    try:
        array = np.load(io.BytesIO(lzma.decompress(path.read_bytes())), allow_pickle=False)
    except (lzma.LZMAError, ValueError, OSError, EOFError) as err:
        raise SamplesError(f"{path}: not a compressed ids file ({_one_line(err)})") from None
    if not isinstance(array, np.ndarray) or array.ndim != 2:
        raise SamplesError(f"{path}: not an (N, L) array of ids")
    return array


def _jsonl_array(path: Path) -> np.ndarray:
    try:
        rows = [json.loads(line)["ids"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        array = np.asarray(rows, dtype=np.int64)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise SamplesError(f"{path}: not a JSONL file of records with 'ids' ({_one_line(err)})") from None
    if array.ndim != 2 or (array.size and array.min() < 0):
        raise SamplesError(f"{path}: ids must be (N, L) and not negative")
    return array.astype(narrowest_dtype(int(array.max()) + 1 if array.size else 1))


def _as_ids(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.int64))


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _npz_bytes(rows: dict[str, np.ndarray]) -> bytes:
    """An uncompressed .npz of the rows, in their order (the xz stream around it compresses)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for key, array in rows.items():
            zf.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_TIME), _npy_bytes(array))
    return buffer.getvalue()


def _check_same(back: dict[str, np.ndarray], rows: dict[str, np.ndarray], path: Path) -> None:
    """Raise (and remove `path`) unless `back` holds exactly `rows`, value, shape and type."""
    for key, array in rows.items():
        got = back.get(key)
        if got is None or got.dtype != array.dtype or not np.array_equal(got, array):
            path.unlink(missing_ok=True)
            raise SamplesError(f"{path}: row {key} does not read back as written; nothing removed")
    if set(back) != set(rows):
        path.unlink(missing_ok=True)
        raise SamplesError(f"{path}: holds rows that were not written; nothing removed")


def _remove_row_files(samples_dir: Path, keys: list[str]) -> None:
    for key in keys:
        for suffix in (SUFFIX, LEGACY_SUFFIX):
            (samples_dir / f"{key}{suffix}").unlink(missing_ok=True)
    try:
        samples_dir.rmdir()  # only if no other file (a row not packed, a run's) is left in it
    except OSError:
        pass


def _write_synced(path: Path, data: bytes) -> None:
    """Write and fsync: the per-row files are removed on the strength of this file."""
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
