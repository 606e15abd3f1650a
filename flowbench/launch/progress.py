"""One overall progress line for a run: models trained, rows evaluated, time elapsed and left.

Each job's worker keeps a small heartbeat file in its shard (`<shard>/progress.json`: training
step, seconds, rows written), rewritten at most every few seconds. Whoever watches the run (the
local launcher's process, `status` for a Slurm submission) reads those files, so the line is the
same wherever the workers run. Time left comes from measured rates: training seconds per unit of
relative cost (`Job.cost`, steps x backbone passes) over the jobs that have trained, and seconds
per evaluated row; the remaining work is shared by the workers. A job not started yet has left
what its model's checkpoint in the cache did not hold at submission (`Job.held`).
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HEARTBEAT = "progress.json"


class Heartbeat:
    """A worker's side: `train(step, total, seconds)` from the training loop, `row(seconds)` per
    evaluated row; writes `<shard>/progress.json` atomically, at most every `every_s` seconds."""

    def __init__(self, shard: Path, *, rows_total: int, every_s: float = 2.0, resume: bool = False):
        """`resume`: the job ran before in this run (its evaluation deferred): keep what that
        heartbeat says of its training."""
        self.path = Path(shard) / HEARTBEAT
        self.every_s, self.last = every_s, float("-inf")
        self.state = {"started": time.time(), "step": 0, "total_steps": 0, "train_seconds": 0.0,
                      "trained": False, "rows_done": 0, "rows_total": rows_total, "eval_seconds": 0.0}
        before = read_heartbeat(shard) if resume else None
        if before is not None:
            self.state.update({k: before[k] for k in ("started", "step", "total_steps", "train_seconds", "trained")
                               if k in before})

    def train(self, step: int, total: int, seconds: float) -> None:
        self.state.update(step=step, total_steps=total, train_seconds=seconds, trained=step >= total)
        self._write(force=step >= total)

    def row(self, seconds: float) -> None:
        self.state.update(trained=True, rows_done=self.state["rows_done"] + 1,
                          eval_seconds=self.state["eval_seconds"] + seconds)
        self._write(force=True)

    def _write(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every_s:
            return
        self.last = now
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(HEARTBEAT + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.path)


def read_heartbeat(shard: Path, *, since: float = 0.0) -> dict | None:
    """A job's heartbeat, or None if it has not started (since `since`, a time.time())."""
    try:
        beat = json.loads((Path(shard) / HEARTBEAT).read_text())
    except (OSError, ValueError):
        return None
    return beat if beat.get("started", 0) >= since else None


@dataclass(frozen=True)
class Overall:
    models_done: int
    models: int
    rows_done: int
    rows: int
    elapsed_s: float
    left_s: float | None  # None until a rate has been measured

    def line(self) -> str:
        left = "estimating" if self.left_s is None else f"~{_clock(self.left_s)}"
        return (f"models {self.models_done}/{self.models} trained, rows {self.rows_done}/{self.rows}, "
                f"{_clock(self.elapsed_s)} elapsed, {left} left")


def work_of(job) -> dict:
    """What the line needs of a job (launch.job.Job): its shard, whether it trains, its relative
    training cost and its number of rows; also what the submission record keeps for `status`."""
    return {"shard": str(job.shard), "trains": job.trains, "cost": job.cost, "held": job.held,
            "rows": len(job.points)}


def overall(work: list[dict], *, since: float, workers: int, now: float | None = None) -> Overall:
    """The run's progress over jobs (`work_of` entries) from their heartbeats written after `since`."""
    now = time.time() if now is None else now
    beats = [(w, read_heartbeat(Path(w["shard"]), since=since)) for w in work]
    trains = [(w, b) for w, b in beats if w["trains"]]
    # seconds per unit of cost, over the jobs that trained in this run (a reused model took none)
    measured = [(w["cost"] * b["step"] / b["total_steps"], b["train_seconds"]) for w, b in trains
                if b and b["total_steps"] and b["train_seconds"] > 0]
    per_cost = sum(s for _, s in measured) / sum(c for c, _ in measured) if measured else None
    # a job not started yet has left what its checkpoint did not hold at submission (older records: all)
    left_cost = sum(w["cost"] * (1 - b["step"] / b["total_steps"]) if b and b["total_steps"]
                    else w["cost"] - w.get("held", 0.0)
                    for w, b in trains if not (b and b["trained"]))
    rows_done = sum(b["rows_done"] for _, b in beats if b)
    rows = sum(w["rows"] for w in work)
    eval_s = sum(b["eval_seconds"] for _, b in beats if b)
    per_row = eval_s / rows_done if rows_done else None
    left = None
    if (per_cost is not None or left_cost <= 0) and (per_row is not None or rows == rows_done):
        busy = max(1, min(workers, len(work)))
        left = (left_cost * (per_cost or 0.0) + (rows - rows_done) * (per_row or 0.0)) / busy
    return Overall(models_done=sum(1 for _, b in trains if b and b["trained"]), models=len(trains),
                   rows_done=rows_done, rows=rows, elapsed_s=now - since, left_s=left)


class Monitor:
    """Prints the overall line in place (a bar at the top) while a local launch runs."""

    def __init__(self, jobs: list, *, workers: int, every_s: float = 2.0):
        from tqdm.auto import tqdm

        self.work, self.workers, self.every_s = [work_of(j) for j in jobs], workers, every_s
        self.since = time.time()
        self.bar = tqdm(total=0, bar_format="{desc}", position=0, dynamic_ncols=True, leave=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._show()
        self.bar.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self._show()

    def _show(self) -> None:
        self.bar.set_description_str(overall(self.work, since=self.since, workers=self.workers).line())


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"
