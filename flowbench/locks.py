"""An exclusive file lock (flock) that the kernel releases when its holder dies.

The leaderboard's writers, the merge of shards, the run lock and the model lock all use it.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path


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
