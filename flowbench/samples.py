"""A row's samples on disk: its (N, L) token ids, compact, with text decoded on demand.

    samples/<row_key>.npy.xz   the ids as a .npy array of the narrowest unsigned type that holds
                               the vocabulary (uint8 up to 256 words), LZMA-compressed

Ids are what every metric reads; text is the corpus's decoding of them, so it is not stored
(`python -m flowbench score` and the reports decode with the corpus). Rows written before this
format are JSONL files of {"text", "ids"} records, and `load_ids` reads those too.
"""
from __future__ import annotations

import io
import json
import lzma
import os
from pathlib import Path

import numpy as np
import torch

SUFFIX = ".npy.xz"
LEGACY_SUFFIX = ".jsonl"


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
    buffer = io.BytesIO()
    np.save(buffer, array.astype(narrowest_dtype(vocab_size)), allow_pickle=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(lzma.compress(buffer.getvalue(), preset=9 | lzma.PRESET_EXTREME))
    os.replace(tmp, path)
    return path


def load_ids(path: str | Path) -> torch.Tensor:
    """(N, L) int64 ids of a samples file in either format (.npy.xz, or legacy .jsonl records)."""
    path = Path(path)
    if not path.is_file():
        raise SamplesError(f"samples file not found: {path}")
    if path.name.endswith(LEGACY_SUFFIX):
        try:
            rows = [json.loads(line)["ids"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise SamplesError(f"{path}: not a JSONL file of records with 'ids' ({err})") from None
        return torch.tensor(rows, dtype=torch.long)
    try:
        array = np.load(io.BytesIO(lzma.decompress(path.read_bytes())), allow_pickle=False)
    except (lzma.LZMAError, ValueError, OSError) as err:
        raise SamplesError(f"{path}: not a compressed ids file ({err})") from None
    return torch.from_numpy(array.astype(np.int64))


def samples_path(samples_dir: str | Path, row_key: str) -> Path:
    """The file holding a row's samples: the compact one, or the legacy JSONL if only it exists."""
    compact = Path(samples_dir) / f"{row_key}{SUFFIX}"
    legacy = Path(samples_dir) / f"{row_key}{LEGACY_SUFFIX}"
    return legacy if legacy.exists() and not compact.exists() else compact
