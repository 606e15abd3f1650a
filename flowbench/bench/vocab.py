"""What V costs: every entry's training step and its sampling at a few NFE, time and peak memory,
at each vocabulary size of `Bench.vocab_sweep` (L, backbone and batches fixed).

The measures are the bench's own, taken at each V in turn: `cases.training` (interleaved rounds
of every entry's training phases beside a bare backbone step, each phase's peak memory),
`cases.latency` at the sweep's sample batch (interleaved rounds) and the peak memory of one
sample batch at each NFE (`PhaseMemory`, as `cases.sampling_memory`). Their rows keep their
columns; the measure is renamed `vocab_<measure>` so they stay apart from the bench's tables at
its one V. `slopes` fits how each grows with V.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from flowbench.bench import cases
from flowbench.bench.config import Bench, BenchEntry
from flowbench.bench.measure import PhaseMemory
from flowbench.config import SuiteError

PREFIX = "vocab_"


def entries(bench: Bench) -> list[BenchEntry]:
    """The entries the sweep measures: the eager ones, each with an NFE grid sampled at the
    sweep's NFEs (a sampler whose NFE is fixed, AR's, keeps none)."""
    nfe = bench.vocab_sweep.nfe
    return [e.model_copy(update={"nfe": list(nfe) if e.nfe is not None else None})
            for e in bench.entries if not e.compile]


def plan(bench: Bench) -> list[tuple[int, list[BenchEntry]]]:
    """(V, the entries measured at V), in the order measured; empty without a sweep. Every
    entry's sampler is checked at every NFE of the sweep first (a bad one is a SuiteError)."""
    if bench.vocab_sweep is None or "vocab" not in bench.measures:
        return []
    swept = entries(bench)
    for e in swept:
        c = cases.build(e, bench, seq_len=bench.seq_len, vocab_size=bench.vocab_size)
        for nfe in e.nfe or [None]:
            c.sampler_params(nfe)
    return [(v, swept) for v in bench.vocab_sweep.vocab_sizes]


def at_vocab(bench: Bench, vocab_size: int, swept: list[BenchEntry]) -> list[dict]:
    """Every entry at one V: training (time per step, peak memory per phase), then sampling time
    (interleaved, at the sweep's sample batch) and sampling peak memory at each NFE."""
    s = bench.vocab_sweep
    at_v = bench.model_copy(update={"vocab_size": vocab_size, "batch_sizes": [s.sample_batch],
                                    "eval_batch": s.sample_batch})
    contestants = [cases.build(e, at_v, seq_len=at_v.seq_len, vocab_size=vocab_size) for e in swept]
    rows = cases.training(contestants, at_v) + cases.latency(contestants, at_v)
    for c in contestants:  # warm from the latency rounds: one measured sample batch per NFE
        for nfe in c.entry.nfe or [None]:
            with PhaseMemory(c.device) as mem:
                c.sample_fn(n=s.sample_batch, nfe=nfe)()
            rows.append(cases.base_row(c, "sample_memory", batch=s.sample_batch, nfe=c.nfe_of(nfe), peak_mb=mem.mb))
    for row in rows:
        row["measure"] = PREFIX + {"latency": "sample"}.get(row["measure"], row["measure"])
    return rows


# --- reading the sweep ---------------------------------------------------------------------------

def quantities(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (contestant, quantity, V): training ms per step (all phases weighted) and peak
    MiB (the largest phase's), sampling ms per sample batch and peak MiB at each NFE."""
    t = table[table.measure.astype(str).str.startswith(PREFIX)]
    if t.empty:
        return pd.DataFrame(columns=["contestant", "family", "quantity", "vocab_size", "value", "batch"])
    train = t[(t.measure == PREFIX + "train") & (t.phase == "all")]
    bare = t[t.measure == PREFIX + "train_bare"].assign(contestant="bare backbone step", family="")
    parts = [train.assign(quantity="train ms", value=1e3 * train.seconds),
             train.assign(quantity="train MiB", value=train.peak_mb),
             bare.assign(quantity="train ms", value=1e3 * bare.seconds)]
    sample = t[t.measure == PREFIX + "sample"]
    memory = t[t.measure == PREFIX + "sample_memory"]
    if len(sample):
        parts.append(sample.assign(quantity="sample ms NFE " + sample.nfe.astype(int).astype(str),
                                   value=1e3 * sample.seconds))
    if len(memory):
        parts.append(memory.assign(quantity="sample MiB NFE " + memory.nfe.astype(int).astype(str),
                                   value=memory.peak_mb))
    cols = ["contestant", "family", "quantity", "vocab_size", "value", "batch", "seq_len"]
    return pd.concat([p[cols] for p in parts], ignore_index=True)


def slopes(table: pd.DataFrame) -> pd.DataFrame:
    """Per contestant and quantity: the log-log least-squares slope over every V (1: linear in V,
    0: flat), the slope between the two largest V, and the linear fit value = a + b V written as
    b per (B L V) entry: ns for times, bytes for memory (B the measure's batch)."""
    rows = []
    for (name, quantity), g in quantities(table).groupby(["contestant", "quantity"], sort=False):
        g = g.sort_values("vocab_size")
        v, y = g.vocab_size.to_numpy(float), g.value.to_numpy(float)
        if len(g) < 2 or (y <= 0).any():
            continue
        entries_per_v = float(g.batch.iloc[0] * g.seq_len.iloc[0])  # B L entries per unit of V
        b = np.polyfit(v, y, 1)[0]
        unit = 1e-3 * 1e9 if "ms" in quantity else 2**20  # ms -> ns, MiB -> bytes
        rows.append({"contestant": name, "quantity": quantity,
                     "loglog_slope": np.polyfit(np.log(v), np.log(y), 1)[0],
                     "top_slope": np.log(y[-1] / y[-2]) / np.log(v[-1] / v[-2]),
                     "per_BLV_entry": b * unit / entries_per_v,
                     "at_V_max": y[-1], "V_max": int(v[-1])})
    return pd.DataFrame(rows)


def summary_lines(table: pd.DataFrame) -> list[str]:
    """summary.md's section: each quantity as contestant x V, then the fitted slopes."""
    q = quantities(table)
    if q.empty:
        return []
    t = table[table.measure.astype(str).str.startswith(PREFIX)]
    parts = [f"## As V grows (L {int(t.seq_len.iloc[0])}; training batch "
             f"{int(t[t.measure == PREFIX + 'train'].batch.iloc[0])}, sample batch "
             f"{int(t[t.measure == PREFIX + 'sample'].batch.iloc[0])}; AR samples in L calls)", ""]
    for quantity, g in q.groupby("quantity", sort=False):
        wide = g.pivot_table(index="contestant", columns="vocab_size", values="value", aggfunc="first", sort=False)
        parts += [f"### {quantity}", "", wide.reset_index().to_markdown(index=False, floatfmt=".4g"), ""]
    fit = slopes(table)
    if len(fit):
        parts += ["### Fitted growth with V",
                  "", "`loglog_slope`: least squares of log value on log V over every V; `top_slope`: between "
                  "the two largest V; `per_BLV_entry`: the slope of value = a + b V per (batch x L x V) "
                  "entry, ns for times and bytes for memory.", "",
                  fit.to_markdown(index=False, floatfmt=".3g"), ""]
    return parts
