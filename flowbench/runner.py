"""Run a suite: one job per distinct model trains it once and evaluates the points that use it.

    python -m flowbench run suites/nfe_sweep.yaml [--out DIR] [--only family=NAME] [--jobs N] [--threads N]
                        [--launcher local|debug|slurm [--cluster slurm/PROFILE.yaml] [--wait]]

Models are cached in the cache directory ($FLOWBENCH_CACHE, default .cache/flowbench) under a
hash of exactly the fields that affect training (models/<family>-<key>.pt), and every load checks
the fields the checkpoint saved; rows go to <out>/leaderboard.csv.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import torch

from flowbench.backbone import count_params
from flowbench.bare_step import BareStep
from flowbench.config import Suite, config_hash, load_suite
from flowbench.launch.collect import model_lock
from flowbench.leaderboard import SWEEP_COLUMNS, Leaderboard
from flowbench.measuring import PhaseMemory, sync
from flowbench.metrics import score_samples, selected
from flowbench.plan import ModelSpec, Point, check_corpus, make_corpus, plan
from flowbench.registry import FAMILIES, JUDGES, METRICS
from flowbench.trainer import (CheckpointError, distributed_rank, load_checkpoint, precision_context,
                               resolve_device, same_identity, stop_if_requested, train)
from flowbench.versions import find_superseded



def cache_root() -> Path:
    return Path(os.environ.get("FLOWBENCH_CACHE", ".cache/flowbench"))


def git_sha() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             check=True, cwd=Path(__file__).parent).stdout.strip()
        # "-dirty" flags changed code; committed reference results being rewritten do not count
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/",
                                ":(exclude,top)results"], capture_output=True, text=True,
                               cwd=Path(__file__).parent).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def checkpoint_meta(spec: ModelSpec) -> dict:
    """What a model's checkpoint saves and is checked against on every load: its identity
    (whose hash is its key) and, for people, its label."""
    return {"label": spec.label, **spec.identity()}


def checkpoint_path(spec: ModelSpec) -> Path:
    """models/<family>-<key>.pt. A checkpoint an older flowbench named by the key's first 6 hex
    characters is moved here if it holds this model; one that holds another model stays where it is."""
    path = cache_root() / "models" / f"{spec.label}.pt"
    legacy = path.with_name(f"{spec.family}-{spec.key[:6]}.pt")
    if not path.exists() and legacy.exists():
        try:
            if same_identity(load_checkpoint(legacy).get("meta") or {}, checkpoint_meta(spec)):
                os.replace(legacy, path)
        except (CheckpointError, FileNotFoundError):
            pass  # unreadable (not known to be this model's), or moved here by another process meanwhile
    return path


def load_trained(spec: ModelSpec) -> dict:
    """The finished checkpoint of `spec`, refused if it holds another model."""
    return load_checkpoint(checkpoint_path(spec), meta=checkpoint_meta(spec))


def train_model(spec: ModelSpec, *, threads: int | None = None, position: int = 0,
                progress: bool = True, on_step=None) -> dict:
    """Train (or resume, or reuse) one model; safe to call in a worker process. It trains on
    `threads` intra-op threads (default: spec.train.threads), whatever else the process does."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or spec.train.threads)
    try:
        return _train_model(spec, position=position, progress=progress, on_step=on_step)
    finally:
        torch.set_num_threads(before)


def _train_model(spec: ModelSpec, *, position: int, progress: bool, on_step) -> dict:
    torch.set_flush_denormal(True)  # denormals from tiny simplex masses slow CPU kernels
    suite = spec.suite
    corpus = make_corpus(suite, cache_dir=cache_root())
    family = FAMILIES.get(spec.family)(params=spec.params, vocab_size=corpus.vocab_size,
                                        seq_len=corpus.seq_len)
    torch.manual_seed(spec.seed)
    model = family.build_model(suite.backbone)
    n_train = spec.train.train_sequences or corpus.available("train") or min(
        spec.train.total_steps(corpus.seq_len, cost=family.train_cost) * spec.train.batch_size, 200_000)
    ckpt = checkpoint_path(spec)
    device = resolve_device(suite.eval.device)
    rank, world = distributed_rank()

    def bare_step_seconds() -> float:
        """Two bare backbone steps at this training's shape (each process's slice of the batch),
        built afresh each time so the training holds no second network between saves."""
        return BareStep(suite.backbone, batch_size=max(1, spec.train.batch_size // world),
                        seq_len=corpus.seq_len, vocab_size=corpus.vocab_size, device=device).seconds(steps=2)

    # one trainer per model across processes; DDP ranks > 0 follow rank 0 and take no lock
    with (model_lock(ckpt) if rank == 0 else contextlib.nullcontext()):
        state = train(family=family, model=model, train_data=corpus.split("train", n_train),
                      val_data=corpus.split("validation", spec.train.val_sequences), config=spec.train,
                      seed=spec.seed, checkpoint=ckpt, meta=checkpoint_meta(spec),
                      device=device, progress=progress, position=position, on_step=on_step,
                      reference=bare_step_seconds)
    return {"step": state["step"], "train_tokens": state["train_tokens"]}


def default_jobs(device_type: str) -> int:
    """Training processes when --jobs is not given: one per CPU core, one on a GPU (each process
    would open a CUDA context of its own on the one device)."""
    return 1 if device_type == "cuda" else os.cpu_count() or 1


def _cost(spec: ModelSpec) -> float:
    """Relative training cost, to start the longest jobs first."""
    cost = spec.step_cost
    return cost * spec.train.total_steps(spec.suite.corpus.seq_len, cost=cost)


class CallCounter:
    """Counts backbone calls (the true NFE) of the network or oracle standing in for it."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def evaluate(point: Point, *, corpus, judge, device: torch.device, suite: Suite) -> tuple[dict, torch.Tensor]:
    spec = point.model
    family = FAMILIES.get(spec.family)(params=spec.params, vocab_size=corpus.vocab_size,
                                        seq_len=corpus.seq_len)
    row: dict = {}
    # before the network is built: its weights count, the judge's not; on the CPU the process's
    # peak (no polling thread beside the timed sampling)
    memory = PhaseMemory(device, cpu="process").start()
    compiled = suite.eval.compile and point.denoiser == "trained"  # an oracle is no network to compile
    if point.denoiser == "trained":
        state = load_trained(spec)
        net = family.build_model(suite.backbone)
        net.load_state_dict(state["weights"])
        net.to(device).eval()
        if compiled:  # automatic dynamic shapes: a second batch size recompiles once
            net = torch.compile(net)
        history = state["history"]
        row.update(params=count_params(net), train_steps=state["step"], train_tokens=state["train_tokens"],
                   train_passes=state["step"] * family.train_cost, **measured_cost(state, family.train_cost),
                   # as trained (a cached model may come from another run); "1,2": resumed on another count
                   train_threads=",".join(map(str, state.get("threads") or [])) or None,
                   val_loss=history[-1]["val_loss"] if history else None, config_hash=spec.key)
    else:
        net = family.oracle_model(corpus.posterior)
    model = CallCounter(net)
    n, bs = point.eval_config.num_samples, point.eval_config.batch_size
    seed = point.sampling_seed
    gen = torch.Generator(device=device).manual_seed(seed)
    kw = dict(sampler=point.sampler, params=point.sampler_params)
    # sampling runs at the precision the model trained with (autocast never touches float64)
    with torch.inference_mode(), precision_context(spec.precision, device):
        # warm-up, not timed: on a GPU or compiled at the timed size (allocator growth, kernel
        # selection or compiling would land in the timing); else a small batch, not to double the sweep
        family.sample(model, n=min(n, bs) if device.type == "cuda" or compiled else min(n, bs, 8),
                      generator=gen, **kw)
        model.calls, chunks, latencies, batches = 0, [], [], 0
        gen.manual_seed(seed)
        for start in range(0, n, bs):
            stop_if_requested(f"evaluation of {spec.label} {point.sampler}")  # a notice: stop between batches
            sync(device)
            t0 = time.perf_counter()
            chunks.append(family.sample(model, n=min(bs, n - start), generator=gen, **kw).cpu())
            sync(device)
            latencies.append(time.perf_counter() - t0)
            batches += 1
    tokens = torch.cat(chunks)
    seconds = sum(latencies)
    peak = memory.stop()
    row.update(score_samples(tokens, corpus=corpus, judge=judge, eval_config=suite.eval, seed=seed,
                             cache_dir=cache_root()))
    sp = point.sampler_params.key_dump()
    nfe = sp.get("nfe") or corpus.seq_len
    merged = {**spec.params.model_dump(), **sp}
    row.update(family=spec.family, denoiser=point.denoiser, sampler=point.sampler, nfe=nfe,
               backbone_calls=model.calls / batches, seed=spec.seed, sample_seed=seed, split=point.split,
               **{c: merged.get(c) for c in SWEEP_COLUMNS},
               family_params=_json(spec.params.model_dump()),
               sampler_params=_json({k: v for k, v in sp.items() if k not in ("nfe", *SWEEP_COLUMNS)}),
               samples_per_s=len(tokens) / seconds, tokens_per_s=tokens.numel() / seconds,
               latency_s=sum(latencies) / len(latencies), peak_mem_mb=round(peak, 1),
               num_samples=len(tokens), device=str(device), precision=spec.precision,
               compiled=compiled,
               # what a trained row's last bits depend on, for `compare` (flowbench/compare.py)
               torch=torch.__version__, cpu_isa=torch.backends.cpu.get_cpu_capability(),
               eval_threads=torch.get_num_threads())
    return row, tokens


def measured_cost(state: dict, train_cost: float) -> dict:
    """train_seconds: the summed wall time of the training's optimiser steps (trainer.train);
    train_cost_ratio: its seconds per declared backbone pass over a bare backbone step's seconds
    (the median of those timed at the training's saves, in its own process): 1 when a step costs
    what it declares, more when the family's own work adds to the backbone's. None where the
    checkpoint predates them."""
    seconds, bare = state.get("train_seconds"), state.get("reference_seconds") or []
    passes = state["step"] * train_cost
    ratio = seconds / passes / statistics.median(bare) if seconds is not None and bare and passes else None
    return {"train_seconds": seconds, "train_cost_ratio": ratio}


def _json(d: dict) -> str:
    return json.dumps(d, sort_keys=True) if d else ""


def row_key_function(suite: Suite, *, corpus=None):
    """point (, older versions) -> its row key: a hash of what produces the row. The versions of
    the metrics the suite computes enter it, no other metric's, so installing a metric changes
    no key of a suite that does not use it (`corpus`: the suite's, built here if not given)."""
    judge_cls = JUDGES.get(suite.eval.judge)
    if corpus is None and suite.eval.metrics is None:  # the default choice depends on the corpus
        corpus = make_corpus(suite, cache_dir=cache_root())
    # compile only where it is on, so the keys of rows from before it was a choice stay valid;
    # the sampling seeds and the sample count and batch size are the point's own (below)
    skip = {"device", "sample_seeds", "num_samples", "batch_size"} | (set() if suite.eval.compile else {"compile"})
    eval_ident = {**suite.eval.model_dump(exclude=skip),
                  "judge_params": {**judge_cls.pinned, **suite.eval.judge_params},
                  "metrics": {m: METRICS.get(m).version for m in sorted(selected(suite.eval, corpus))}}

    def key_of(point: Point, older: dict | None = None) -> str:
        # the batch size orders the sampler's random draws, so it changes every sample after the first batch
        ident = {**eval_ident, "num_samples": point.eval_config.num_samples,
                 "batch_size": point.eval_config.batch_size}
        if point.sample_seed is not None:  # unset: the training seed, already in the model's identity
            ident.update(sample_seed=point.sample_seed, split=point.split)
        return config_hash(point.identity(ident, older=older))

    return key_of


def run_suite(path: str | Path, *, out: str | Path | None = None, only: dict[str, str] | None = None,
              jobs: int | None = None, progress: bool = True, launcher: str = "local",
              cluster: str | Path | None = None, wait: bool = False, threads: int | None = None) -> Path:
    """Plan the suite, hand the jobs its missing rows need to a launcher (flowbench/launch/) and
    merge their shards into <out>/leaderboard.csv; with a launcher that queues jobs (slurm),
    return after submission unless `wait`. `threads`: every job's intra-op threads instead of
    its model's train.threads."""
    from flowbench.launch import make_launcher
    from flowbench.launch.collect import collect, run_lock
    from flowbench.launch.job import make_jobs
    from flowbench.launch.record import save_record

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
        pending = list({key: p for p in points if (key := key_of(p)) not in done}.values())
        pending = run.not_in_flight(pending, key_of) if hasattr(run, "not_in_flight") else pending
        if not pending:
            print(f"{suite.name}: all {len(points)} rows already in {board.csv} or queued")
            return board.csv
        replaced, notes = find_superseded(pending, current=Point.components, row_key=key_of, done=done)
        for line in notes:
            print(f"{suite.name}: {line}")
        # a judge that trains (the local one) is trained here once, not raced for by every job
        judge_cls(corpus=corpus, cache_dir=cache_root(), device=device, **suite.eval.judge_params)
        index_of = {id(p): i for i, p in enumerate(points)}
        job_list = make_jobs(pending, suite_path=Path(path), out=board.dir, cache=cache_root(), only=only,
                             index_of=index_of, key_of=key_of, replaced=replaced, git_sha=git_sha(), threads=threads,
                             timestamp=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
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
