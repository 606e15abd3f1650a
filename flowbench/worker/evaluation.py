"""Evaluate one point: draw its samples from the trained network (or the exact denoiser), time
them, count the backbone calls, and score them into one leaderboard row."""
from __future__ import annotations

import time

import torch

from flowbench.backbone import count_params
from flowbench.config import Suite
from flowbench.leaderboard import SWEEP_COLUMNS
from flowbench.measuring import PhaseMemory, sync
from flowbench.metrics import score_samples
from flowbench.plan import Point
from flowbench.registry import FAMILIES
from flowbench.trainer import precision_context, stop_if_requested
from flowbench.worker.checkpoints import cache_root, load_trained
from flowbench.worker.provenance import environment, json_cell
from flowbench.worker.training import measured_cost


class CallCounter:
    """Counts backbone calls (the true NFE) of the network or oracle standing in for it."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def evaluate(point: Point, *, corpus, judge, device: torch.device, suite: Suite) -> tuple[dict, torch.Tensor]:
    """One point's leaderboard row (without the job's provenance columns) and its samples (N, L)."""
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
    row["judge_ppl"] = getattr(judge, "held_out_ppl", None)  # the judge's own held-out perplexity, if it has one
    sp = point.sampler_params.key_dump()
    nfe = sp.get("nfe") or corpus.seq_len
    merged = {**spec.params.model_dump(), **sp}
    row.update(family=spec.family, denoiser=point.denoiser, sampler=point.sampler, nfe=nfe,
               backbone_calls=model.calls / batches, seed=spec.seed, sample_seed=seed, split=point.split,
               **{c: merged.get(c) for c in SWEEP_COLUMNS},
               family_params=json_cell(spec.params.model_dump()),
               sampler_params=json_cell({k: v for k, v in sp.items() if k not in ("nfe", *SWEEP_COLUMNS)}),
               samples_per_s=len(tokens) / seconds, tokens_per_s=tokens.numel() / seconds,
               latency_s=sum(latencies) / len(latencies), peak_mem_mb=round(peak, 1),
               num_samples=len(tokens), device=str(device), precision=spec.precision,
               compiled=compiled, **environment())
    return row, tokens
