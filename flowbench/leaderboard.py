"""Append-only leaderboard CSV keyed by `row_key`; each row's sample ids beside it.

A row is written only after its samples file is in place, and rows whose key is already in the
CSV are skipped, so an interrupted run started again loses nothing and writes nothing twice.
A row computed after a version bump names the row it replaces in `supersedes`
(flowbench/versions.py); readers keep only `current_rows`.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from flowbench.metrics import METRIC_COLUMNS
from flowbench.samples import SUFFIX, save_ids

SWEEP_COLUMNS = ("t_star", "beta", "alpha", "temperature", "top_p")  # sampler/family knobs swept by suites
COLUMNS = [
    "suite", "family", "denoiser", "sampler", "nfe", "backbone_calls", *SWEEP_COLUMNS,
    "seed", "sample_seed", "split", "params", "train_steps", "train_tokens", "train_passes", "train_threads",
    "train_seconds", "train_cost_ratio", "val_loss", "gen_ppl", "gen_ppl_mean",
    "nll_mean", "nll_median", "judge", "entropy",
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
    def __init__(self, out_dir: Path):
        self.dir = Path(out_dir)
        self.csv = self.dir / "leaderboard.csv"
        self.samples_dir = self.dir / "samples"

    def keys(self) -> set[str]:
        if not self.csv.exists():
            return set()
        self._drop_partial_line()
        with self.csv.open(newline="") as f:
            return {row["row_key"] for row in csv.DictReader(f)}

    def _drop_partial_line(self) -> None:
        """A run killed mid-write can leave a last line without its newline: drop it."""
        data = self.csv.read_bytes()
        if data and not data.endswith(b"\n"):
            self.csv.write_bytes(data[: data.rfind(b"\n") + 1])

    def write_samples(self, row_key: str, tokens, *, vocab_size: int) -> Path:
        """A row's (N, L) sample ids, compact (flowbench/samples.py); before its row is appended."""
        return save_ids(self.samples_dir / f"{row_key}{SUFFIX}", tokens, vocab_size=vocab_size)

    def append(self, row: dict) -> None:
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise KeyError(f"leaderboard row has unknown columns {sorted(unknown)}")
        self.dir.mkdir(parents=True, exist_ok=True)
        new = not self.csv.exists() or self.csv.stat().st_size == 0
        header = COLUMNS if new else self._upgraded_header()
        with self.csv.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            if new:
                writer.writeheader()
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in header})
            f.flush()
            os.fsync(f.fileno())

    def _upgraded_header(self) -> list[str]:
        """The file's header, rewritten first (atomically) if it lacks columns added since it was
        written: appending longer rows under a shorter header would shift every later reader."""
        with self.csv.open(newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            if not set(COLUMNS) - set(header):
                return header
            rows = list(reader)
        header = COLUMNS + [c for c in header if c not in COLUMNS]  # keep columns this code does not know
        tmp = self.csv.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header, restval="")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.csv)
        return header
