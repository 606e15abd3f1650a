"""One job: train one model (resuming from its checkpoint), then evaluate the points that use it;
or train the suite's judge, where the judge is made by training and not cached (`Judge.ready`).

A judge job runs beside the contestants' jobs, first in the list: contestants train meanwhile, and
an evaluation that needs the judge before it is done waits on the judge's lock (or, where no
judge job has started yet, trains it itself under that lock): it is trained exactly once. The
local launcher asks a job to defer instead (`defer_evaluation`): a model trained before the judge
returns DEFERRED and runs again behind the queued jobs, so no core sits waiting for the judge.

A job carries paths and keys, never models: the worker (a local process, a Slurm task) loads the
suite again, plans it again and finds its points by their index in the plan, checking each row key
so a suite file edited after submission fails loudly instead of filling wrong rows. Rows go to the
job's own shard (`<out>/shards/<job>/leaderboard.csv`), so concurrent jobs never share a file;
`collect` merges the shards into the leaderboard. A row is appended to the shard only after its
samples are written, and a job started again skips the rows its shard already holds, so a killed
job costs only its unfinished training steps and its unfinished row.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from flowbench.launch.progress import Heartbeat
from flowbench.leaderboard import Leaderboard


class JobError(RuntimeError):
    pass


class LauncherError(ValueError):
    """A launcher asked for wrongly, or jobs that failed under it (one line)."""


@dataclass(frozen=True)
class JobPoint:
    index: int  # position in plan(suite, only=...)
    row_key: str
    supersedes: str | None = None
    label: str = ""  # for people: family/denoiser/sampler/params


@dataclass(frozen=True)
class Job:
    name: str  # the model's label (as its checkpoint), or 'oracle-<family>' for points that need no training
    suite: str  # absolute path of the suite file
    out: str  # the results folder
    cache: str  # the cache folder (checkpoints, corpora, judges)
    points: tuple[JobPoint, ...]
    git_sha: str
    timestamp: str
    only: dict | None = None
    cost: float = 0.0  # relative training cost (backbone passes)
    held: float = 0.0  # of `cost`, what its checkpoint in the cache held at submission
    trains: bool = field(default=False)
    threads: int | None = None  # intra-op threads of the job's process; None: its model's train.threads
    eval_cost: float = 0.0  # its rows' evaluation in the same units (EVAL_PASSES_PER_SAMPLE)
    judge: bool = False  # trains the suite's judge (no points)

    @property
    def work(self) -> float:
        """The job's whole work, training and evaluation, in backbone passes: the longest start first."""
        return self.cost - self.held + self.eval_cost

    @property
    def shard(self) -> Path:
        return shard_dir(Path(self.out), self.name)


def shard_dir(out: Path, name: str) -> Path:
    return Path(out) / "shards" / name


# Evaluating one sample (sampling, judging, the metrics' features) costs about this many training
# backbone passes: the nfe_sweep reference's jobs spent 3749 s evaluating 127488 samples and 15248 s
# training 168000 passes (before MAUVE's clustering ran on one BLAS thread, which cut one row's
# evaluation about threefold: an upper estimate). It ranks the jobs by their whole work, so an oracle
# job with many rows (66 in nfe_sweep, longer than a model's training) is not left to the end.
EVAL_PASSES_PER_SAMPLE = 0.32


def make_jobs(pending: list, *, suite_path: Path, out: Path, cache: Path, only: dict | None,
              index_of: dict, key_of, replaced: dict[str, str], git_sha: str, timestamp: str,
              threads: int | None = None) -> list[Job]:
    """Group pending points into jobs: one per trained model, one per family for the rest
    (oracle points); the most work (training and evaluation) first."""
    from flowbench.worker.training import held_cost, training_cost  # the families and the trainer: only where jobs are made

    groups: dict[str, list] = {}
    for p in pending:
        name = p.model.label if p.denoiser == "trained" else f"oracle-{p.model.family}"
        groups.setdefault(name, []).append(p)
    jobs = []
    for name, points in groups.items():
        trains = points[0].denoiser == "trained"
        jobs.append(Job(
            name=name, suite=str(Path(suite_path).resolve()), out=str(Path(out).resolve()),
            cache=str(Path(cache).resolve()), only=only, git_sha=git_sha, timestamp=timestamp,
            trains=trains, cost=training_cost(points[0].model) if trains else 0.0,
            held=held_cost(points[0].model) if trains else 0.0, threads=threads,
            eval_cost=EVAL_PASSES_PER_SAMPLE * sum(p.eval_config.num_samples for p in points),
            points=tuple(JobPoint(index=index_of[id(p)], row_key=(k := key_of(p)), supersedes=replaced.get(k),
                                  label=describe(p)) for p in points)))
    return sorted(jobs, key=lambda j: j.work, reverse=True)


def judge_job(*, judge: str, suite_path: Path, out: Path, cache: Path, only: dict | None, git_sha: str,
              timestamp: str) -> Job:
    """The job that trains the suite's judge: no points, first in the list (every evaluation waits for it)."""
    return Job(name=f"judge-{judge}", suite=str(Path(suite_path).resolve()), out=str(Path(out).resolve()),
               cache=str(Path(cache).resolve()), only=only, git_sha=git_sha, timestamp=timestamp, points=(),
               judge=True)


def describe(point) -> str:
    sp = ",".join(f"{k}={v}" for k, v in point.sampler_params.key_dump().items())
    fp = ",".join(f"{k}={v}" for k, v in point.model.params.model_dump().items())
    sample = "" if point.sample_seed is None else f" sample_seed={point.sample_seed} ({point.split})"
    return f"{point.model.family}({fp}) seed={point.model.seed} {point.denoiser} {point.sampler}({sp}){sample}"


# run_job's answer when it trained its model and left its evaluation for later: the judge was still
# being trained by another job, and the launcher runs the job again (its model is in the cache)
# rather than leave a core waiting for the judge
DEFERRED = -1


def run_job(job: Job, *, position: int = 0, progress: bool = False, defer_evaluation: bool = False,
            requeued: bool = False) -> int:
    """Train and evaluate one job; returns the number of rows it wrote (0 if all were done), or
    DEFERRED where `defer_evaluation` is set and the judge is not ready when the model is trained
    (`requeued`: this is the job's second run after it deferred, in the same launch).
    The job runs on a fixed number of intra-op threads (Job.threads, else its model's
    train.threads), never one that follows how many other jobs are pending: the count changes
    the trained bits."""
    import torch

    before = torch.get_num_threads()
    try:
        return _run_job(job, position=position, progress=progress, defer_evaluation=defer_evaluation,
                        requeued=requeued)
    finally:
        torch.set_num_threads(before)  # the in-process launchers' own process


def _run_job(job: Job, *, position: int, progress: bool, defer_evaluation: bool, requeued: bool) -> int:
    import torch

    from flowbench import worker
    from flowbench.allocator import retain_freed_memory
    from flowbench.config import load_suite
    from flowbench.plan import make_corpus, plan
    from flowbench.registry import JUDGES, load_builtins
    from flowbench.trainer import resolve_device, stop_if_requested

    os.environ["FLOWBENCH_CACHE"] = job.cache  # worker.cache_root() of this process
    retain_freed_memory()  # a spawned or cluster worker is a process of its own
    load_builtins()
    suite = load_suite(job.suite)
    if job.judge:
        return _train_judge(job, suite)
    points = plan(suite, only=job.only)
    corpus = make_corpus(suite, cache_dir=worker.cache_root())
    key_of = worker.row_key_function(suite, corpus=corpus)
    mine = []
    for jp in job.points:
        if jp.index >= len(points) or key_of(points[jp.index]) != jp.row_key:
            raise JobError(f"job {job.name}: {job.suite} changed since submission (point {jp.label} "
                           f"no longer has row key {jp.row_key}); run the suite again")
        mine.append((points[jp.index], jp))
    shard = Leaderboard(job.shard)
    done = shard.keys()
    todo = [(p, jp) for p, jp in mine if jp.row_key not in done]
    if not todo:
        return 0
    beat = Heartbeat(job.shard, rows_total=len(todo), resume=requeued)
    threads = job.threads or todo[0][0].model.train.threads
    torch.set_num_threads(threads)
    if job.trains:
        spec = todo[0][0].model
        # the log says what a requeued job picked up
        start = worker.load_trained(spec)["step"] if worker.checkpoint_path(spec).exists() else 0
        print(f"job {job.name}: training from step {start}", flush=True)
        trained = worker.train_model(spec, threads=threads, position=position, progress=progress,
                                     on_step=beat.train)
        beat.train(trained["step"], trained["step"], beat.state["train_seconds"])
    if not is_main_process():  # DDP: every rank trains, one evaluates
        return 0
    device = resolve_device(suite.eval.device)
    judge_cls = JUDGES.get(suite.eval.judge)
    if defer_evaluation and not judge_cls.ready(corpus=corpus, cache_dir=worker.cache_root(), device=device,
                                                **suite.eval.judge_params):
        print(f"job {job.name}: trained; its evaluation waits for the judge and runs after the jobs queued", flush=True)
        return DEFERRED
    judge = judge_cls(corpus=corpus, cache_dir=worker.cache_root(), device=device, **suite.eval.judge_params)
    board = Leaderboard(Path(job.out))  # its samples folder; rows go to the shard
    for point, jp in todo:
        stop_if_requested(f"job {job.name}, before {jp.label}")  # a notice: stop between rows
        t0 = time.perf_counter()
        row, tokens = worker.evaluate(point, corpus=corpus, judge=judge, device=device, suite=suite)
        board.write_samples(jp.row_key, tokens, vocab_size=corpus.vocab_size)
        shard.append({**row, "suite": suite.name, "judge": suite.eval.judge,
                      "git_sha": job.git_sha, "row_key": jp.row_key,
                      "timestamp": job.timestamp, "supersedes": jp.supersedes,
                      "versions": worker.json_cell({c: v for c, (_, v) in point.components().items()})})
        beat.row(time.perf_counter() - t0)
    return len(todo)


def _train_judge(job: Job, suite) -> int:
    """Make the suite's judge, which trains it (or waits for its trainer, or loads it); no rows."""
    from flowbench import worker
    from flowbench.plan import make_corpus
    from flowbench.registry import JUDGES
    from flowbench.trainer import resolve_device

    if not is_main_process():  # DDP: one process trains the judge
        return 0
    corpus = make_corpus(suite, cache_dir=worker.cache_root())
    judge = JUDGES.get(suite.eval.judge)(corpus=corpus, cache_dir=worker.cache_root(),
                                         device=resolve_device(suite.eval.device), **suite.eval.judge_params)
    ppl = judge.held_out_ppl
    print(f"job {job.name}: judge ready" + ("" if ppl is None else f", held-out perplexity {ppl:.3f}"), flush=True)
    return 0


def is_main_process() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
