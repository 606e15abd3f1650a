"""`python -m flowbench bench [suites/bench.yaml]`: what each paradigm costs, measured side by side.

In one process, for every contestant at the same backbone size and (L, V): the sampler's overhead
over the bare backbone calls it makes, latency and samples/s by batch size and NFE, the cost of
every phase of its training step against a bare backbone step (and its tokens/s against
`ar_gpt2`), peak memory of training and of sampling, and sampling time
as L doubles and V grows; with a `vocab_sweep`, training and sampling time and memory at each V
(flowbench/bench/vocab.py). Writes <out>/bench.csv, <out>/summary.md and PNGs (flowbench/bench/plots.py).
Networks are randomly initialised (cost does not depend on weights); docs/performance.md reads
the numbers.
"""
from __future__ import annotations

import datetime as dt
import platform
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from flowbench.allocator import retain_freed_memory
from flowbench.bench import cases, vocab
from flowbench.bench.config import Bench, load_bench

DEFAULT_BENCH = Path("suites/bench.yaml")


def run_bench(path: str | Path = DEFAULT_BENCH, *, out: str | Path | None = None, progress: bool = True,
              plots: bool = True) -> Path:
    bench = load_bench(path)
    out = Path(out) if out else Path("results") / bench.name
    torch.set_num_threads(bench.threads)
    torch.set_flush_denormal(True)  # as the job workers
    retain_freed_memory()           # as every command and worker (flowbench/allocator.py)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "bench.csv"
    # measure by measure across contestants, so the tables a reader needs first fill first; the
    # CSV is rewritten after every step, so an interrupted bench keeps what it measured
    jobs = {"overhead": cases.overhead, "latency": cases.latency, "train": cases.training,
            "memory": cases.sampling_memory}
    # latency and training are one step over every contestant (interleaved, cases.latency and
    # cases.training); the rest one per entry. Compiled entries take part in latency only
    # (BenchEntry.compile)
    eager = [e for e in bench.entries if not e.compile]
    together = ("latency", "train")
    steps = [(job, e) for job in jobs if job in bench.measures
             for e in (eager if job not in together else [None])]
    steps += [("scaling", e) for e in eager] if bench.scaling and "scaling" in bench.measures else []
    for e in bench.entries:  # every entry's family, parameters and sampler checked before any timing
        c = cases.build(e, bench, seq_len=bench.seq_len, vocab_size=bench.vocab_size)
        for nfe in e.nfe or [None]:
            c.sampler_params(nfe)
    steps += [("vocab", at) for at in vocab.plan(bench)]  # every V in turn (flowbench/bench/vocab.py)
    rows: list[dict] = []
    stamp = _stamp(bench)
    for done, (job, entry) in enumerate(tqdm(steps, desc=f"{bench.name}", disable=not progress,
                                             dynamic_ncols=True), start=1):
        if job == "scaling":
            rows += cases.scaling(entry, bench)
        elif job == "vocab":
            rows += vocab.at_vocab(bench, *entry)
        elif job == "latency":
            rows += cases.latency([cases.build(e, bench, seq_len=bench.seq_len, vocab_size=bench.vocab_size)
                                   for e in bench.entries], bench)
        elif job == "train":
            rows += cases.training([cases.build(e, bench, seq_len=bench.seq_len, vocab_size=bench.vocab_size)
                                    for e in eager], bench)
        else:
            c = cases.build(entry, bench, seq_len=bench.seq_len, vocab_size=bench.vocab_size)
            rows += jobs[job](c, bench)
        table = _with_ratios(pd.DataFrame(rows)).assign(**stamp, steps_done=done, steps_total=len(steps))
        table.to_csv(csv, index=False)
    render(csv, plots=plots)
    return csv


def render(csv: Path, *, plots: bool = True) -> None:
    """summary.md and the PNGs beside a bench.csv (also one an interrupted bench left)."""
    from flowbench.bench.report import summary

    table = pd.read_csv(csv)
    (csv.parent / "summary.md").write_text(summary(table))
    if plots:
        from flowbench.bench.plots import write_plots

        write_plots(table, csv.parent)


def _stamp(bench: Bench) -> dict:
    from flowbench.worker import git_sha

    return dict(weights="random init (cost does not depend on weights)", d_model=bench.backbone.d_model,
                n_layers=bench.backbone.n_layers, n_heads=bench.backbone.n_heads, threads=bench.threads,
                device=bench.device, torch=torch.__version__, cpu=platform.processor() or platform.machine(),
                git_sha=git_sha(), timestamp=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


def _with_ratios(table: pd.DataFrame) -> pd.DataFrame:
    """train_ratio_to_ar: tokens/s over the AR family's whole training (its phase 'all' row).
    (Latency rows carry their speed-ups over each AR sampler already, paired round by round:
    cases.latency.)"""
    table = table.copy()
    train = table["measure"] == "train"
    ar = table[train & (table["family"] == cases.AR_FAMILY) & (table.get("phase") == "all")]
    if len(ar):
        table.loc[train, "train_ratio_to_ar"] = table.loc[train, "tokens_per_s"] / ar["tokens_per_s"].iloc[0]
    return table


__all__ = ["Bench", "run_bench", "DEFAULT_BENCH"]
