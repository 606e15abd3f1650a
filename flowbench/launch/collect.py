"""Merge the jobs' shards into the leaderboard, each row key exactly once; the run lock.

Merging takes an exclusive lock on `<out>/.merge.lock`, reads the leaderboard's keys and appends
the shard rows it lacks, so two collectors at once, or one killed half-way and started again,
still leave every row exactly once. `run` holds `<out>/.run.lock` while it plans and launches:
a second `run` on the same folder refuses in one line naming the lock. Training a model holds
`<checkpoint>.lock` (`model_lock`): two runs that share a model (two suites, or a local run beside
a Slurm job) train it once, the second waiting for the first's final checkpoint.
"""
from __future__ import annotations

import csv
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from flowbench.leaderboard import Leaderboard


class RunLockedError(RuntimeError):
    pass


@contextmanager
def locked(path: Path, *, wait: bool = True, on_wait=None):
    """An exclusive flock on `path`, released when the block ends or the process dies.

    Held elsewhere: wait (after calling on_wait(holder pid) if given) or raise RunLockedError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            if not wait:
                raise RunLockedError(f"{path.parent} is in use by another run (pid {holder} holds {path})") from None
            if on_wait is not None:
                on_wait(holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def run_lock(out: Path):
    return locked(Path(out) / ".run.lock", wait=False)


def model_lock(checkpoint: Path):
    """Held while a model trains: a second trainer of the same checkpoint waits, then finds it done."""
    def say(holder: str) -> None:
        print(f"{checkpoint.stem}: being trained by pid {holder}; waiting for its checkpoint", flush=True)

    return locked(checkpoint.with_suffix(".lock"), on_wait=say)


def shard_rows(out: Path) -> dict[str, list[dict]]:
    """job name -> the rows of its shard (a last line cut by a kill is dropped)."""
    found = {}
    for csv_path in sorted((Path(out) / "shards").glob("*/leaderboard.csv")):
        board = Leaderboard(csv_path.parent)
        board.keys()  # drops a partial last line
        with csv_path.open(newline="") as f:
            found[csv_path.parent.name] = list(csv.DictReader(f))
    return found


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
                board.append({k: v for k, v in row.items() if v != "" and k is not None})
                have.add(row["row_key"])
                added += 1
    return added
