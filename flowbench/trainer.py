"""One training loop for every family: AdamW, warmup + cosine, clipping, EMA, resume.

The loop knows only `family.loss(model, x1)`; what a family does with the batch is its own.
Checkpoints are written atomically (temp file + rename) and hold the resolved config, so a
checkpoint explains itself and an interrupted run resumes from the last one. A resumed run is the
same run: the batch order is a function of (seed, step), and the checkpoint holds every other
state the loop draws on (noise and global RNGs, optimiser, schedule, EMA, history, running loss).
"""
from __future__ import annotations

import copy
import hashlib
import math
import os
import signal
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm
from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup, get_wsd_schedule

from flowbench.config import TrainConfig, config_hash


class CheckpointError(RuntimeError):
    pass


class Interrupted(RuntimeError):
    """Raised at a safe point (a training step's end, between evaluation batches) after
    `request_stop()`; what is done up to that point is kept."""


class TrainingInterrupted(Interrupted):
    """Raised at a step boundary after `request_stop()`, once the checkpoint of that step is saved."""


_stop_requested = False


def request_stop(*_signal) -> None:
    """Ask the running `train` to checkpoint after its current step and raise TrainingInterrupted,
    or the work after training to stop at its next `stop_if_requested`; safe to call from a signal
    handler (a preemption or time-limit notice), which is what it is for."""
    global _stop_requested
    _stop_requested = True


def _stop_now() -> bool:
    global _stop_requested
    stop, _stop_requested = _stop_requested, False
    return stop


_continues = 0  # SIGCONTs this process has seen: it was stopped and continued


def _count_continue(*_signal) -> None:
    global _continues
    _continues += 1


def count_continues() -> None:
    """Count SIGCONT (a stopped process continued: a shell's ^Z and fg, `scontrol suspend` and
    resume, SIGSTOP and SIGCONT) so `StepClock` can leave the stop out. Signals arrive in the main
    thread; elsewhere, or where another handler is set, nothing is installed and nothing counted."""
    if (hasattr(signal, "SIGCONT") and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGCONT) in (signal.SIG_DFL, _count_continue)):
        signal.signal(signal.SIGCONT, _count_continue)


class StepClock:
    """Wall seconds of training steps that a stop does not inflate: a step during which the
    process was continued (`count_continues`) counts as long as the step before it, and `stopped`
    sums the rest, so elapsed times can leave the stop out too. Without it a run stopped for an
    hour records that hour in one step's time (train_seconds, train_cost_ratio, the time left)."""

    def __init__(self):
        self.last, self.stopped, self._t, self._seen = 0.0, 0.0, 0.0, _continues

    def start(self) -> None:
        self._t = time.perf_counter()

    def lap(self) -> float:
        """Seconds since `start`, or the previous lap's if the process was continued meanwhile."""
        seconds = time.perf_counter() - self._t
        if _continues != self._seen:
            self._seen = _continues
            self.stopped += max(0.0, seconds - self.last)
            return min(seconds, self.last)
        self.last = seconds
        return seconds


def stop_if_requested(what: str) -> None:
    """Raise Interrupted if a stop was requested (and clear the request): work outside training,
    such as evaluation, calls this between its units so a notice stops it at a unit's end."""
    if _stop_now():
        raise Interrupted(f"{what}: stopped on request")


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """'fp32' or 'bf16': 'auto' is bf16 autocast on CUDA and fp32 elsewhere."""
    if precision == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    return precision


def precision_context(precision: str, device: torch.device | str):
    """Autocast for a resolved precision: bf16 matmuls over fp32 weights, or nothing for fp32.

    float64 work (the oracle, categorical draws) is never autocast."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return nullcontext()


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) of this process in a DDP training; (0, 1) without one."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, *, meta: dict | None = None) -> dict:
    """The checkpoint at `path`; given `meta` (what `train` was given), refuse one saved for
    another model (CheckpointError, one line naming both)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which and how to recover
        raise CheckpointError(f"corrupt checkpoint {path} ({type(err).__name__}); delete it to retrain") from None
    saved = state.get("meta") or {}
    if meta is not None and not same_identity(saved, meta):
        differ = sorted(k for k in (set(saved) | set(meta)) - {"label"}
                        if config_hash(saved.get(k)) != config_hash(meta.get(k)))
        raise CheckpointError(f"checkpoint {path} holds {_identity_name(saved)}, not {_identity_name(meta)} "
                              f"(they differ in {', '.join(differ)}); move or delete it")
    return state


def _identity(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k != "label"}  # the label is for people


def same_identity(saved: dict, meta: dict) -> bool:
    """Whether a checkpoint's saved `meta` is that of the model `meta` describes: every field
    but the label, compared as the keys hash them (JSON, sorted)."""
    return config_hash(_identity(saved), n=64) == config_hash(_identity(meta), n=64)


def _identity_name(meta: dict) -> str:
    label, digest = meta.get("label") or "an unlabelled model", config_hash(_identity(meta))
    return label if digest in label else f"{label} (identity {digest})"


def saved_world(state: dict) -> int:
    """How many processes trained the checkpoint `state` (older checkpoints do not say)."""
    ranks = state.get("noise_rng_ranks")
    return state.get("world") or (len(ranks) if ranks else 1)


def restore_noise(noise_gen: torch.Generator, state: dict, *, seed: int, rank: int, world: int) -> str | None:
    """Set this process's noise generator to where the checkpoint `state` left it.

    With the world size it was saved with, each process continues its own saved stream (the resumed
    run is the uninterrupted one). With another, each process's slice of a batch is another slice
    and no saved stream continues it: every process starts a fresh stream, a function of (seed, step,
    rank, world) alone, and a line saying so is returned."""
    saved = saved_world(state)
    if saved == world:
        noise_gen.set_state(state["noise_rng"] if world == 1 else state["noise_rng_ranks"][rank])
        return None
    step = state["step"]
    digest = hashlib.sha256(f"noise seed={seed} step={step} rank={rank} world={world}".encode()).digest()
    noise_gen.manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    return (f"checkpoint of {saved} process(es) resumed at step {step} by {world}: each process's noise "
            f"stream is drawn afresh from the seed and step")


def batches(data: torch.Tensor, batch_size: int, *, seed: int, start: int = 0):
    """Endless shuffled mini-batches from batch number `start` on.

    Epoch e is the e-th permutation drawn from a generator seeded with `seed`, so batch k depends
    on (seed, k) alone and a resumed run needs no saved state to see the batches it would have seen."""
    per_epoch = len(data) // batch_size
    gen = torch.Generator().manual_seed(seed)
    epoch, skip = divmod(start, per_epoch)
    for _ in range(epoch):  # the permutations of the epochs already trained on
        torch.randperm(len(data), generator=gen)
    while True:
        perm = torch.randperm(len(data), generator=gen)
        for b in range(skip, per_epoch):
            yield data[perm[b * batch_size:(b + 1) * batch_size]]
        skip = 0


@torch.no_grad()
def validation_loss(family, model, val: torch.Tensor, *, batch_size: int, device, seed: int) -> float:
    """Mean loss on the validation split, with a fixed noise seed so values are comparable."""
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    total, count = 0.0, 0
    for i in range(0, len(val), batch_size):
        x1 = val[i:i + batch_size].to(device)
        total += family.loss(model, x1, generator=gen).item() * len(x1)
        count += len(x1)
    model.train(was_training)
    return total / count


def lr_schedule(opt: torch.optim.Optimizer, config: TrainConfig, total: int):
    """Linear warmup over `warmup_steps`, then `config.schedule` (TrainConfig) to step `total`."""
    warmup = min(config.warmup_steps, total)
    if config.schedule == "constant":
        return get_constant_schedule_with_warmup(opt, warmup)
    if config.schedule == "wsd":
        decay = max(1, round(config.decay_fraction * total))
        return get_wsd_schedule(opt, warmup, decay, num_stable_steps=max(0, total - warmup - decay))
    return get_cosine_schedule_with_warmup(opt, warmup, total)


def train(*, family, model: torch.nn.Module, train_data: torch.Tensor, val_data: torch.Tensor,
          config: TrainConfig, seed: int, checkpoint: Path, meta: dict, device: torch.device,
          progress: bool = True, position: int = 0, on_step=None,
          reference: Callable[[], float] | None = None, alone: bool = False) -> dict:
    """Train `model` with `family.loss` to the budget; resume from `checkpoint` if present.
    `on_step(step, total, seconds)`, if given, is called after every step (progress reports).

    Returns the final checkpoint dict (weights to evaluate under 'weights': the EMA copy if
    enabled, else the raw weights) and writes it to `checkpoint`. The checkpoint keeps the summed
    wall time of the optimiser steps (`train_seconds`: loss, backward, clipping, optimiser, EMA;
    not validation or saving; None when resumed from a checkpoint that predates it) and, with
    `reference` (a callable timing a unit of reference work, e.g. a bare backbone step:
    flowbench.bare_step), its seconds measured before every save (`reference_seconds`), so a
    step's cost can be read against work timed in the same process under the same load.
    `alone`: train in this process only, even inside a DDP process group (a judge: one process
    trains it, the others wait for its checkpoint)."""
    seq_len = train_data.shape[1]
    total = config.total_steps(seq_len, cost=family.train_cost)
    rank, world = (0, 1) if alone else distributed_rank()
    if config.batch_size % world:
        raise ValueError(f"train.batch_size {config.batch_size} does not split over {world} processes")
    torch.manual_seed(seed)
    model.to(device).train()
    # DDP: every process sees the same global batch and trains on its slice; averaged gradients
    # equal those of the whole batch, so the run is the single-process run up to rounding
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                            betas=(0.9, 0.98))
    sched = lr_schedule(opt, config, total)
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
           if config.ema > 0 else None)
    noise_gen = torch.Generator(device=device).manual_seed(seed + 1 + 7919 * rank)  # own noise per slice
    step, history, loss_avg, seconds = 0, [], None, 0.0
    train_seconds: float | None = 0.0
    reference_seconds: list[float] = []
    threads = []  # intra-op thread counts the run trained on, in order (they change the rounding)

    if checkpoint.exists():
        state = load_checkpoint(checkpoint, meta=meta)  # another model's weights are never resumed
        model.load_state_dict(state["model"])
        if state.get("done"):
            return state
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        note = restore_noise(noise_gen, state, seed=seed, rank=rank, world=world)
        if note and rank == 0:
            print(f"{meta.get('label', 'training')}: {note}", flush=True)
        if state.get("torch_rng") is not None:  # the global RNG: dropout (older checkpoints lack it)
            torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        step, history = state["step"], state["history"]
        loss_avg, seconds = state.get("loss_avg"), state.get("seconds", 0.0)
        train_seconds = state.get("train_seconds")  # None: steps timed before it was kept
        reference_seconds = list(state.get("reference_seconds") or [])
        threads = list(state.get("threads") or [])
    if threads[-1:] != [torch.get_num_threads()]:
        threads.append(torch.get_num_threads())

    autocast = precision_context(resolve_precision(config.precision, device), device)
    stream = batches(train_data, config.batch_size, seed=seed, start=step)

    def snapshot(done: bool) -> dict:
        weights = (ema.module if ema is not None else model).state_dict()
        ranks = None
        if world > 1:  # collective: each process's noise generator, to resume each slice's noise
            ranks = [None] * world
            torch.distributed.all_gather_object(ranks, noise_gen.get_state())
        return {"noise_rng_ranks": ranks, "model": model.state_dict(), "weights": copy.deepcopy(weights),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "noise_rng": noise_gen.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "step": step, "history": history, "loss_avg": loss_avg, "done": done, "meta": meta,
                "world": world,
                "threads": threads,
                "seconds": elapsed(),  # training wall time; lost work and stops are not counted
                "train_seconds": train_seconds, "reference_seconds": list(reference_seconds),
                "train_tokens": step * config.batch_size * seq_len}

    def measure_reference() -> None:
        if reference is not None:
            with autocast:
                reference_seconds.append(reference())

    def save(state: dict) -> None:
        if rank == 0:
            atomic_save(state, checkpoint)
        if world > 1:  # no process reads the file before it is complete
            torch.distributed.barrier()

    bar = tqdm(total=total, initial=step, desc=meta.get("label", "train"), position=position,
               disable=not progress or rank > 0, dynamic_ncols=True, leave=True)
    t0 = time.perf_counter() - seconds
    count_continues()
    clock = StepClock()

    def elapsed() -> float:  # training wall time, stops left out
        return time.perf_counter() - t0 - clock.stopped

    while step < total:
        clock.start()
        x1 = next(stream).to(device)  # (B, L) global batch
        if world > 1:
            x1 = x1.chunk(world)[rank]  # (B / world, L)
        family.train_progress = step / total  # a family whose loss changes over training reads it
        with autocast:
            loss = family.loss(net, x1, generator=noise_gen)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"{meta.get('label', 'training')}: loss is {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update_parameters(model)
        step += 1
        value = loss.detach().float()
        if world > 1:  # the global batch's loss, as one process would log it
            torch.distributed.all_reduce(value)
            value /= world
        loss_avg = value.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * value.item()
        step_seconds = clock.lap()  # .item() above waited for the step's kernels
        if train_seconds is not None:
            train_seconds += step_seconds
        bar.update(1)
        if on_step is not None:
            on_step(step, total, elapsed())
        if step % config.eval_every == 0 or step == total:
            val = validation_loss(family, ema.module if ema is not None else model, val_data,
                                  batch_size=config.batch_size * 4, device=device, seed=seed)
            history.append({"step": step, "train_loss": loss_avg, "val_loss": val,
                            "seconds": elapsed()})
            bar.set_postfix(loss=f"{loss_avg:.3f}", val=f"{val:.3f}")
        stop = _stop_requested  # preempted: lose nothing but the unfinished step
        if world > 1:  # all processes stop at the same step, or the next all-reduce hangs
            flag = torch.tensor([float(stop)], device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop = bool(flag.item())
        if (step % config.checkpoint_every == 0 or stop) and step < total:
            measure_reference()
            save(snapshot(done=False))
        if stop and step < total:
            _stop_now()  # a request after the last step is left for what follows training
            bar.close()
            raise TrainingInterrupted(f"{meta.get('label', 'training')}: stopped at step {step} of {total}; "
                                      f"checkpoint saved to {checkpoint}")
    bar.close()
    measure_reference()
    final = snapshot(done=True)
    save(final)
    return final
