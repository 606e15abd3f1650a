"""Merge the jobs' shards into the leaderboard, each row key exactly once; the run lock.

Merging takes an exclusive lock on `<out>/.merge.lock`, reads the leaderboard's keys and appends
the shard rows it lacks, so two collectors at once, or one killed half-way and started again,
still leave every row exactly once. `run` holds `<out>/.run.lock` while it plans and launches:
a second `run` on the same folder refuses in one line naming the lock. (The lock a model holds
while it trains is `model_lock`, flowbench/worker/checkpoints.py.)
"""
from __future__ import annotations

from pathlib import Path

from flowbench.leaderboard import Leaderboard
from flowbench.locks import RunLockedError, locked  # noqa: F401 (RunLockedError: the run lock's error)


def run_lock(out: Path):
    return locked(Path(out) / ".run.lock", wait=False)


def shard_rows(out: Path) -> dict[str, list[dict]]:
    """job name -> the complete rows of its shard. Read only: a job may be appending to it (a
    partial last line is skipped, and repaired by the shard's next writer)."""
    return {csv_path.parent.name: Leaderboard(csv_path.parent).rows()
            for csv_path in sorted((Path(out) / "shards").glob("*/leaderboard.csv"))}


def collect(out: Path) -> int:
    """Append every shard row whose key the leaderboard lacks; returns how many were added."""
    out = Path(out)
    board = Leaderboard(out)
    added = 0
    with locked(out / ".merge.lock"):
        have = board.keys()
        for rows in shard_rows(out).values():
            for row in rows:
                if row["row_key"] in have:
                    continue
                board.append({k: v for k, v in row.items() if v != ""})
                have.add(row["row_key"])
                added += 1
    return added
