"""Train one model: build its family's network, train it (or resume it, or reuse it) into its
checkpoint, and read back what the training cost."""
from __future__ import annotations

import contextlib
import statistics

import torch

from flowbench.bare_step import BareStep
from flowbench.plan import ModelSpec, make_corpus
from flowbench.registry import FAMILIES
from flowbench.trainer import distributed_rank, resolve_device, train
from flowbench.worker.checkpoints import cache_root, checkpoint_meta, checkpoint_path, model_lock


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


def training_cost(spec: ModelSpec) -> float:
    """Relative training cost (backbone passes): the training part of a job's work."""
    cost = spec.step_cost
    return cost * spec.train.total_steps(spec.suite.corpus.seq_len, cost=cost)


def held_cost(spec: ModelSpec) -> float:
    """The part of `training_cost` its checkpoint in the cache already holds (a model another suite
    trained, or a killed run's): 0 without one. Only the saved step is read (the tensors are
    memory-mapped, not loaded); a checkpoint that cannot be read counts as none, and the job that
    loads it says what is wrong with it."""
    path = checkpoint_path(spec)
    if not path.exists():
        return 0.0
    try:
        step = int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["step"])
    except Exception:
        return 0.0
    cost = spec.step_cost
    return cost * min(step, spec.train.total_steps(spec.suite.corpus.seq_len, cost=cost))


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
