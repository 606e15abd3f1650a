"""Run a suite: plan it, submit one job per distinct model to a launcher, collect the rows.

    python -m flowbench run suites/nfe_sweep.yaml [--out DIR] [--only family=NAME] [--jobs N] [--threads N]
                        [--launcher local|debug|slurm [--cluster slurm/PROFILE.yaml] [--wait]]

The runner only plans (flowbench/plan.py), submits (flowbench/launch/) and collects (the jobs'
shards into <out>/leaderboard.csv). What a job does, training one model and evaluating the
points that use it, is the worker's library (flowbench/worker/), which the jobs call; models are
cached under $FLOWBENCH_CACHE (default .cache/flowbench) by a hash of exactly the fields that
affect training (models/<family>-<key>.pt).
"""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from flowbench.config import load_suite
from flowbench.launch import make_launcher
from flowbench.launch.collect import collect, run_lock
from flowbench.launch.job import judge_job, make_jobs
from flowbench.launch.record import save_record
from flowbench.leaderboard import Leaderboard
from flowbench.plan import Point, check_corpus, make_corpus, plan
from flowbench.registry import JUDGES
from flowbench.trainer import resolve_device
from flowbench.versions import find_superseded
from flowbench.worker import cache_root, git_sha, row_key_function


def default_jobs(device_type: str) -> int:
    """Training processes when --jobs is not given: one per CPU core, one on a GPU (each process
    would open a CUDA context of its own on the one device)."""
    return 1 if device_type == "cuda" else os.cpu_count() or 1


def run_suite(path: str | Path, *, out: str | Path | None = None, only: dict[str, str] | None = None,
              jobs: int | None = None, progress: bool = True, launcher: str = "local",
              cluster: str | Path | None = None, wait: bool = False, threads: int | None = None) -> Path:
    """Plan the suite, hand the jobs its missing rows need to a launcher (flowbench/launch/) and
    merge their shards into <out>/leaderboard.csv; with a launcher that queues jobs (slurm),
    return after submission unless `wait`. `threads`: every job's intra-op threads instead of
    its model's train.threads."""
    suite = load_suite(path)
    points = plan(suite, only=only)  # every check that needs no training happens here
    corpus = make_corpus(suite, cache_dir=cache_root())
    trained = {p.model.key: p.model for p in points if p.denoiser == "trained"}
    check_corpus(corpus, suite, list(trained.values()))
    device = resolve_device(suite.eval.device)
    judge_cls = JUDGES.get(suite.eval.judge)
    board = Leaderboard(Path(out) if out else Path("results") / suite.name)
    judge_cls.check_params(suite.eval.judge_params)
    key_of = row_key_function(suite, corpus=corpus)
    run = make_launcher(launcher, jobs=jobs or default_jobs(device.type), cluster=cluster, out=board.dir)
    with run_lock(board.dir):
        collect(board.dir)  # rows that finished since the last run
        done = board.keys()
        # one row per key: oracle points of models that differ only in training share a key
        by_key = {key_of(p): p for p in points}
        missing = [p for key, p in by_key.items() if key not in done]
        pending = run.not_in_flight(missing, key_of) if hasattr(run, "not_in_flight") else missing
        if not pending:
            print(f"{suite.name}: all {len(by_key)} rows already in {board.csv} or queued")
            return board.csv
        if len(missing) < len(by_key) or len(pending) < len(missing):
            # a resumed run: the progress line counts what is left, so say what is already there
            # (rows a queue still holds are neither on the board nor to go)
            left_models = {p.model.key for p in missing if p.denoiser == "trained"}
            queued = f", {len(missing) - len(pending)} queued" if len(pending) < len(missing) else ""
            print(f"{suite.name}: {len(by_key) - len(missing)} of {len(by_key)} rows already in {board.csv}, "
                  f"{len(trained) - len(left_models)} of {len(trained)} trained models with all their rows"
                  f"{queued}; {len(pending)} rows to go")
        replaced, notes = find_superseded(pending, current=Point.components, row_key=key_of, done=done)
        for line in notes:
            print(f"{suite.name}: {line}")
        judge_kw = dict(corpus=corpus, cache_dir=cache_root(), device=device, **suite.eval.judge_params)
        judge_ready = judge_cls.ready(**judge_kw)
        if judge_ready:
            judge_cls(**judge_kw)  # a judge that cannot load (the hub's, offline) fails before any training
        index_of = {id(p): i for i, p in enumerate(points)}
        stamp, sha = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), git_sha()
        job_list = make_jobs(pending, suite_path=Path(path), out=board.dir, cache=cache_root(), only=only,
                             index_of=index_of, key_of=key_of, replaced=replaced, git_sha=sha, threads=threads,
                             timestamp=stamp)
        if not judge_ready:
            # a judge still to be trained (the local one) trains in a job of its own, first, beside
            # the contestants' training; evaluations wait for it on its lock (launch/job.py)
            job_list.insert(0, judge_job(judge=suite.eval.judge, suite_path=Path(path), out=board.dir,
                                         cache=cache_root(), only=only, git_sha=sha, timestamp=stamp))
        try:
            launched = run.launch(job_list, progress=progress)
        finally:
            if run.waits:
                collect(board.dir)  # what finished is kept even if a job failed
        save_record(board.dir, launcher=run.name, jobs=job_list,
                    ids={n: v["job_id"] for n, v in launched.items()},
                    logs={n: v["log"] for n, v in launched.items()})
        if not run.waits and wait:
            run.wait()
            collect(board.dir)
    return board.csv
