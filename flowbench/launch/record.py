"""The submission record (`<out>/submission.json`: point -> job id, log path) and `status`.

`status` reads the record, takes 'done' from the leaderboard and the shards, and asks Slurm about
every other job in one `squeue` and one `sacct` call (no per-job polling). A job neither reports
(no sacct, accounting off, records purged, the queue forgot it) is judged by its own folder:
submitit's result file says it finished (or raised, and what), a log without a result says it died;
with no word from anywhere it is 'unknown', with the reason, never 'queued'.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from submitit.core.utils import JobPaths, pickle_load
from submitit.slurm.slurm import read_job_id

from flowbench.launch.collect import shard_rows
from flowbench.launch.progress import overall, work_of
from flowbench.leaderboard import Leaderboard

RECORD = "submission.json"
STATUSES = ("done", "queued", "running", "failed", "unknown")
# Slurm's states of a job still in the queue -> what a person needs to know; every other state
# sacct reports has ended (COMPLETED, FAILED, TIMEOUT, CANCELLED, PREEMPTED, NODE_FAIL, ...)
STATES = {"PENDING": "queued", "REQUEUED": "queued", "REQUEUE_HOLD": "queued", "REQUEUE_FED": "queued",
          "CONFIGURING": "queued", "RESIZING": "queued", "SUSPENDED": "queued", "STOPPED": "queued",
          "RUNNING": "running", "COMPLETING": "running", "SIGNALING": "running", "STAGE_OUT": "running"}


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
    tmp.write_text(json.dumps(_paths(record, lambda p: _relative(p, out)), indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def load_record(out: Path) -> dict:
    """The record, its paths (shards, logs) as paths on this machine."""
    path = Path(out) / RECORD
    if not path.exists():
        raise FileNotFoundError(f"no submission record {path}: run the suite first")
    return _paths(json.loads(path.read_text()), lambda p: str(Path(out) / p) if p and not Path(p).is_absolute() else p)


def _paths(record: dict, convert) -> dict:
    """The record with `convert` applied to every path it holds (jobs' shards, points' logs)."""
    return {**record,
            "jobs": {name: {**job, "shard": convert(job["shard"])} for name, job in record.get("jobs", {}).items()},
            "points": {key: {**point, "log": convert(point["log"])} for key, point in record["points"].items()}}


def _relative(path: str, out: Path) -> str:
    """A path inside the results folder as seen from it, so a record copied or committed with its
    folder names no machine's folders; a path elsewhere (a cluster's log folder) stays as given."""
    if not path:
        return path
    try:
        return str(Path(path).resolve().relative_to(Path(out).resolve()))
    except ValueError:
        return str(path)


def _ask(command: list[str]) -> tuple[str, str]:
    """(stdout, why it said nothing useful): 'no <tool>' off PATH, its error line if it failed."""
    if shutil.which(command[0]) is None:
        return "", f"no {command[0]}"
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    except subprocess.TimeoutExpired:  # a controller or database that does not answer
        return "", f"{command[0]} timed out"
    if done.returncode != 0 and not done.stdout.strip():
        said = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        # squeue asked for a single id fails if Slurm has forgotten it (for several it filters)
        return "", "" if "invalid job id" in said.lower() else f"{command[0]} failed: {said}"
    return done.stdout, ""


def _parse(out: str) -> dict[str, str]:
    """'id|STATE' lines -> {id: STATE}; a pending array's '12_[0-3]' gives 12_0 ... 12_3."""
    states = {}
    for line in out.splitlines():
        job_id, _, state = line.strip().partition("|")
        if not job_id:
            continue
        state = state.split()[0] if state.strip() else "UNKNOWN"  # "CANCELLED by 0" -> CANCELLED
        try:
            spans = read_job_id(job_id)  # submitit's reading: (id,), (id, task) or (id, first, last)
        except ValueError:
            spans = [(job_id,)]
        for main, *tasks in spans:
            if not tasks:
                states[main] = state
            for task in range(int(tasks[0]), int(tasks[-1]) + 1) if tasks else ():
                states[f"{main}_{task}"] = state
    return states


def sacct_states(job_ids: list[str]) -> tuple[dict[str, str], str]:
    """job id -> Slurm accounting state, in one sacct call, and why an id may be missing
    ('no sacct' on PATH, sacct's error when accounting is off, '' when sacct holds no record)."""
    ids = sorted({j for j in job_ids if j and j != "local"})
    if not ids:
        return {}, ""
    out, why = _ask(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(ids)])
    return _parse(out), why


def squeue_states(job_ids: list[str]) -> tuple[dict[str, str], str]:
    """job id -> state of the ids in Slurm's queue (pending or running), in one squeue call, and
    why one may be missing ('no squeue', its error, '' when the queue does not hold it)."""
    ids = sorted({j for j in job_ids if j and j != "local"})
    if not ids:
        return {}, ""
    out, why = _ask(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(ids)])
    return _parse(out), why


def job_files(log: str, job_id: str) -> tuple[str, str]:
    """What a Slurm job's own folder says: ('finished', ''), ('failed', its exception), ('died', ...)
    when it logged but left no result, or ('', why) when it has neither."""
    if not log:
        return "", "no log path recorded"
    paths = JobPaths(Path(log).parent, job_id=job_id)  # submitit's file names in the job's folder
    if paths.result_pickle.exists():
        try:
            outcome, value = pickle_load(paths.result_pickle)
        except Exception as err:  # noqa: BLE001 - a result from another environment is still a result
            return "failed", f"unreadable result {paths.result_pickle}: {type(err).__name__}"
        if outcome == "success":
            return "finished", ""
        lines = [line for line in str(value).splitlines() if line.strip()]
        return "failed", f"raised {lines[-1].strip() if lines else outcome}"
    if paths.stderr.exists() or paths.stdout.exists():
        return "died", f"log without result in {paths.folder}"
    return "", f"no result or log in {paths.folder}"


def slurm_state(entry: dict, *, sacct: dict, sacct_why: str, squeue: dict, squeue_why: str) -> tuple[str, str]:
    """(state, why) of a recorded Slurm job whose rows are not all in: queued or running if a
    source says so, failed if it ended or died, unknown if no source knows it."""
    job_id = entry["job_id"]
    for source, states in (("squeue", squeue), ("sacct", sacct)):
        if STATES.get(states.get(job_id)) in ("queued", "running"):
            return STATES[states[job_id]], f"{source} {states[job_id]}"
    files, said = job_files(entry["log"], job_id)
    for source, states in (("sacct", sacct), ("squeue", squeue)):  # ended, in Slurm's word
        if job_id in states:
            said = "ended without writing its rows" if files == "finished" else said
            return "failed", "; ".join(filter(None, [f"{source} {states[job_id]}", said]))
    unseen = f"{squeue_why or 'not in squeue'}, {sacct_why or 'no sacct record'}"
    if files == "finished":
        return "failed", f"finished without writing its rows; {unseen}"
    if files == "failed":
        return "failed", said
    if files == "died" and not squeue_why:  # the queue was asked and does not hold it
        return "failed", f"died: {said}; {unseen}"
    return "unknown", f"{unseen}; {said}"


def point_status(out: Path) -> list[dict]:
    """One entry per recorded point: point, state (done/queued/running/failed/unknown), why, job
    id, log. Slurm's word comes from sacct, then squeue (one call each), then the job's own files."""
    record = load_record(out)
    done = Leaderboard(Path(out)).keys() | {r["row_key"] for rows in shard_rows(out).values() for r in rows}
    asked = [e["job_id"] for k, e in record["points"].items() if k not in done and e["launcher"] == "slurm"]
    sacct, sacct_why = sacct_states(asked)
    squeue, squeue_why = squeue_states(asked) if asked else ({}, "")
    result = []
    for key, entry in record["points"].items():
        if key in done:
            state, why = "done", ""
        elif entry["launcher"] != "slurm":
            state, why = "failed", "ended without writing its row"  # in-process runs end before returning
        else:
            state, why = slurm_state(entry, sacct=sacct, sacct_why=sacct_why, squeue=squeue, squeue_why=squeue_why)
        result.append({**entry, "row_key": key, "state": state, "why": why})
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
    counts = {s: sum(e["state"] == s for e in entries) for s in STATUSES}
    lines = [f"{e['state']:8} {e['job_id'] or '-':>10}  {e['point']}  {e['log'] or ''}"
             f"{'  (' + e['why'] + ')' if e['why'] else ''}".rstrip() for e in entries]
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    line = progress_line(out)
    return lines + ([line] if line else []) + [summary]
