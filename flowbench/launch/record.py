"""The submission record (`<out>/submission.json`: point -> job id, log path) and `status`.

`status` reads the record, takes 'done' from the leaderboard and the shards, and asks Slurm about
every other job in one `sacct` call (no per-job polling).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from flowbench.launch.collect import shard_rows
from flowbench.launch.progress import overall, work_of
from flowbench.leaderboard import Leaderboard

RECORD = "submission.json"
# sacct states -> what a person needs to know; anything else is 'failed'
STATES = {"PENDING": "queued", "REQUEUED": "queued", "REQUEUE_HOLD": "queued", "PREEMPTED": "queued",
          "CONFIGURING": "queued", "RESIZING": "queued", "SUSPENDED": "queued",
          "RUNNING": "running", "COMPLETING": "running", "COMPLETED": "finished"}


def save_record(out: Path, *, launcher: str, jobs: list, ids: dict[str, str], logs: dict[str, str]) -> Path:
    """Merge this submission into the record: points of earlier submissions keep their entry
    unless this one resubmits them."""
    path = Path(out) / RECORD
    record = load_record(out) if path.exists() else {"points": {}}
    submitted = time.time()
    for job in jobs:  # what the overall progress line needs (launch/progress.py)
        record.setdefault("jobs", {})[job.name] = {**work_of(job), "submitted": submitted}
    for job in jobs:
        for jp in job.points:
            record["points"][jp.row_key] = {"point": jp.label, "job": job.name, "launcher": launcher,
                                            "job_id": ids.get(job.name, ""), "log": logs.get(job.name, "")}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def load_record(out: Path) -> dict:
    path = Path(out) / RECORD
    if not path.exists():
        raise FileNotFoundError(f"no submission record {path}: run the suite first")
    return json.loads(path.read_text())


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    """job id -> Slurm state, for all ids in one sacct call ({} where sacct is absent)."""
    ids = sorted({j for j in job_ids if j and j != "local"})
    if not ids or shutil.which("sacct") is None:
        return {}
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(ids)],
                         capture_output=True, text=True, check=False).stdout
    states = {}
    for line in out.splitlines():
        job_id, _, state = line.partition("|")
        states[job_id] = state.split()[0] if state else ""  # "CANCELLED by 0" -> CANCELLED
    return states


def point_status(out: Path) -> list[dict]:
    """One entry per recorded point: point, state (done/queued/running/failed), job id, log."""
    record = load_record(out)
    done = Leaderboard(Path(out)).keys() | {r["row_key"] for rows in shard_rows(out).values() for r in rows}
    states = sacct_states([p["job_id"] for p in record["points"].values()])
    result = []
    for key, entry in record["points"].items():
        if key in done:
            state = "done"
        elif entry["launcher"] != "slurm":
            state = "failed"  # an in-process or debug run returns only when its jobs have ended
        else:
            slurm = states.get(entry["job_id"], "PENDING")  # just submitted: sacct may not know it yet
            state = STATES.get(slurm, "failed")
            state = "failed" if state == "finished" else state  # ended without writing its row
        result.append({**entry, "row_key": key, "state": state})
    return sorted(result, key=lambda e: (e["job"], e["point"]))


def progress_line(out: Path) -> str | None:
    """The overall line of the newest submission (models trained, rows, time elapsed and left),
    from the jobs' heartbeats; None for a record written before it was kept."""
    jobs = list(load_record(out).get("jobs", {}).values())
    if not jobs:
        return None
    newest = max(j["submitted"] for j in jobs)
    current = [j for j in jobs if j["submitted"] == newest]
    return overall(current, since=newest, workers=len(current)).line()


def status_lines(out: Path) -> list[str]:
    entries = point_status(out)
    counts = {s: sum(e["state"] == s for e in entries) for s in ("done", "queued", "running", "failed")}
    lines = [f"{e['state']:8} {e['job_id'] or '-':>10}  {e['point']}  {e['log'] or ''}".rstrip()
             for e in entries]
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    line = progress_line(out)
    return lines + ([line] if line else []) + [summary]
