"""Append-only leaderboard CSV keyed by `row_key`; each row's sample ids beside it.

A row is written only after its samples file is in place, and rows whose key is already in the
CSV are skipped, so an interrupted run started again loses nothing and writes nothing twice.
A row computed after a version bump names the row it replaces in `supersedes`
(flowbench/versions.py); readers keep only `current_rows`.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from flowbench.locks import locked
from flowbench.metrics import METRIC_COLUMNS
from flowbench.samples import SUFFIX, pack_samples, save_ids

SWEEP_COLUMNS = ("t_star", "beta", "alpha", "temperature", "top_p")  # sampler/family knobs swept by suites
COLUMNS = [
    "suite", "family", "denoiser", "sampler", "nfe", "backbone_calls", *SWEEP_COLUMNS,
    "seed", "sample_seed", "split", "params", "train_steps", "train_tokens", "train_passes", "train_threads",
    "train_seconds", "train_cost_ratio", "val_loss", "gen_ppl", "gen_ppl_mean",
    "nll_mean", "nll_median", "judge", "judge_ppl", "entropy",
    *[c for c in METRIC_COLUMNS if c not in ("gen_ppl", "gen_ppl_mean", "nll_mean", "nll_median", "entropy")],
    "samples_per_s", "tokens_per_s",
    "latency_s", "peak_mem_mb", "num_samples", "family_params", "sampler_params", "device",
    "precision", "compiled", "torch", "cpu_isa", "eval_threads", "git_sha", "config_hash", "row_key", "timestamp",
    "versions", "supersedes",
]


def current_rows(rows: list[dict]) -> list[dict]:
    """The rows no other row supersedes (the newest version of each configuration)."""
    replaced = {r.get("supersedes") for r in rows} - {None, ""}
    return [r for r in rows if r["row_key"] not in replaced]


class Leaderboard:
    """One CSV of rows keyed by `row_key`, and its samples folder.

    `columns` are the known columns, in order (default: the runner's); a row may carry more (a
    metric from outside the package): they are added to the header after the known ones.
    Readers never write: a last line without its newline (a row being written, or one a killed
    writer left) is not a row yet. The writer repairs a line a killed writer left, under
    `<dir>/.leaderboard.lock`, which every writer of the file holds while it appends."""

    def __init__(self, out_dir: Path, *, columns: list[str] | None = None):
        self.dir = Path(out_dir)
        self.csv = self.dir / "leaderboard.csv"
        self.samples_dir = self.dir / "samples"
        self.columns = list(COLUMNS if columns is None else columns)

    def rows(self) -> list[dict]:
        """Every complete row, in file order (a partial last line is left alone, unread)."""
        if not self.csv.exists():
            return []
        data = self.csv.read_bytes()
        text = data[: data.rfind(b"\n") + 1].decode()
        reader = csv.DictReader(io.StringIO(text, newline=""))
        return [{k: v for k, v in row.items() if k is not None} for row in reader]

    def keys(self) -> set[str]:
        return {row["row_key"] for row in self.rows()}

    def write_samples(self, row_key: str, tokens, *, vocab_size: int) -> Path:
        """A row's (N, L) sample ids, compact (flowbench/samples.py); before its row is appended."""
        return save_ids(self.samples_dir / f"{row_key}{SUFFIX}", tokens, vocab_size=vocab_size)

    def pack_samples(self) -> Path:
        """Pack the samples of every row of the CSV into one file (flowbench/samples.py): for a
        finished folder. A row's samples are final once its row is in the CSV, so a samples file
        with no row yet (a run still writing) stays as it is."""
        return pack_samples(self.dir, [row["row_key"] for row in self.rows()])

    def append(self, row: dict) -> None:
        """Append one row (fsynced); None and missing values are written empty."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with locked(self.dir / ".leaderboard.lock"):
            if self.csv.exists() and self.csv.stat().st_size:
                self._drop_partial_line()
            new = not self.csv.exists() or self.csv.stat().st_size == 0
            extra = [c for c in row if c not in self.columns]
            header = self.columns + extra if new else self._upgraded_header(extra)
            with self.csv.open("a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=header)
                if new:
                    writer.writeheader()
                writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in header})
                f.flush()
                os.fsync(f.fileno())

    def _drop_partial_line(self) -> None:
        """A writer killed mid-row leaves a last line without its newline: cut it (only a writer
        holding the lock may, or it could cut a row another writer is still writing)."""
        with self.csv.open("rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return
            f.seek(0)
            data = f.read()
            f.truncate(data.rfind(b"\n") + 1)
            f.flush()
            os.fsync(f.fileno())

    def _upgraded_header(self, extra: list[str]) -> list[str]:
        """The file's header, rewritten first (atomically) if it lacks a known column (added since
        it was written) or one of `extra` (a row's columns beyond the known ones): appending longer
        rows under a shorter header would shift every later reader. Known columns come first, then
        the file's and the row's others, in the order they came."""
        with self.csv.open(newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            if not (set(self.columns) | set(extra)) - set(header):
                return header
            rows = list(reader)
        header = self.columns + [c for c in dict.fromkeys(header + extra) if c not in self.columns]
        tmp = self.csv.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header, restval="")
            writer.writeheader()
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.csv)
        return header
