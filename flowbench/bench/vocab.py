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

from flowbench.bench import cases, roofline
from flowbench.bench.config import Bench, BenchEntry
from flowbench.measuring import PhaseMemory
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
    maps = {c.entry.name: v_maps(c.family.backbone_spec()) for c in contestants}
    for row in rows:
        row["measure"] = PREFIX + {"latency": "sample"}.get(row["measure"], row["measure"])
        row["v_maps"] = maps.get(row["contestant"], 1)  # the bare step: its head alone
    return rows


def v_maps(spec) -> int:
    """The backbone's dense maps over V: the head, a simplex input's V -> d map, a self-conditioning
    input's (flowbench/backbone.py)."""
    return 1 + (spec.input == "simplex") + bool(spec.self_cond)


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
    if len(fit) and (t.measure == PREFIX + "train_bare").any():
        owt = roofline.OWT
        ext = extrapolation(table, d_model=owt.d, n_layers=owt.layers, seq_len=owt.seq_len, vocab_size=owt.vocab)
        parts += [f"### Extrapolation (not measured) to d {owt.d} x {owt.layers} layers, L {owt.seq_len}, "
                  f"V {owt.vocab}, per sequence", "",
                  "`GiB`: the (B, L, V) state alone, fitted bytes per entry x L x V; `seconds`: one thread at "
                  "the bare step's matmul rate plus the fitted non-matmul (B L V) work; `V_share`: the part of "
                  "`seconds` that grows with V (`extrapolation`).", "",
                  ext.to_markdown(index=False, floatfmt=".3g"), ""]
    return parts


# --- extrapolation to a larger model ---------------------------------------------------------------

def forward_flops_per_token(*, d_model: int, n_layers: int, seq_len: int, vocab_size: int, maps: int = 1) -> float:
    """Matmul FLOPs of one bidirectional forward per position (flowbench/bench/roofline.py's
    counts): blocks 2 x 12 n d^2, attention 4 L d n, and `maps` dense V x d maps 2 V d each."""
    return 2 * 12 * n_layers * d_model ** 2 + 4 * seq_len * d_model * n_layers + 2 * maps * vocab_size * d_model


def extrapolation(table: pd.DataFrame, *, d_model: int, n_layers: int, seq_len: int, vocab_size: int,
                  batch: int = 1) -> pd.DataFrame:
    """An extrapolation, not a measurement: each contestant's cost per `batch` sequences at another
    size, from the sweep's fits and one matmul rate.

    Memory: the fitted bytes per (B L V) entry times batch x L x V: the (B, L, V) state alone
    (weights, optimiser state and the backbone's activations left out). Time: matmul FLOPs at the
    rate the bare backbone step reached at the sweep's smallest V (FLOPs / its measured seconds),
    plus the (B L V) work that is not a matmul, per entry: the fitted ns per entry less the V
    maps' FLOPs per entry at that rate (at least 0). Training counts a declared pass as 3 forwards
    (forward, backward); sampling counts NFE forwards (AR: one forward's worth over its L calls)."""
    t = table[table.measure.astype(str).str.startswith(PREFIX)]
    bare = t[t.measure == PREFIX + "train_bare"].sort_values("vocab_size").iloc[0]
    meta = t.iloc[0]
    d0, n0, L0 = int(meta.d_model), int(meta.n_layers), int(bare.seq_len)
    bare_flops = 3 * bare.batch * L0 * forward_flops_per_token(d_model=d0, n_layers=n0, seq_len=L0,
                                                               vocab_size=int(bare.vocab_size))
    rate = bare_flops / bare.seconds
    fit = slopes(t).set_index(["contestant", "quantity"])
    rows = []
    for (name, quantity), f in fit.iterrows():
        if "NFE" not in quantity and not quantity.startswith("train"):
            continue
        g = t[t.contestant == name].iloc[0]
        maps = 1 if name == "bare backbone step" else (
            int(g.v_maps) if pd.notna(g.get("v_maps")) else _default_maps(g.family))
        if quantity.startswith("train"):
            row = t[(t.contestant == name) & (t.measure.isin([PREFIX + "train", PREFIX + "train_bare"]))]
            passes = 1.0 if name == "bare backbone step" else float(row[row.phase == "all"].train_cost.iloc[0])
            forwards = 3 * passes
        else:
            nfe = int(quantity.rsplit(" ", 1)[1])
            forwards = 1 if g.family == cases.AR_FAMILY else nfe
        out = {"contestant": name, "quantity": quantity}
        if quantity.endswith("MiB") or "MiB" in quantity:
            out["GiB"] = f.per_BLV_entry * batch * seq_len * vocab_size / 2**30
        else:
            matmul_ns = 1e9 * forwards * 2 * maps * d0 / rate   # V maps' FLOPs per entry at the sweep
            other_ns = max(0.0, f.per_BLV_entry - matmul_ns)
            per_token = forward_flops_per_token(d_model=d_model, n_layers=n_layers, seq_len=seq_len,
                                                vocab_size=vocab_size, maps=maps)
            v_part = forward_flops_per_token(d_model=d_model, n_layers=0, seq_len=seq_len,
                                             vocab_size=vocab_size, maps=maps)
            seconds_matmul = forwards * batch * seq_len * per_token / rate
            seconds_other = other_ns * 1e-9 * batch * seq_len * vocab_size
            out |= {"non_matmul_ns_per_entry": other_ns, "seconds": seconds_matmul + seconds_other,
                    "V_share": (forwards * batch * seq_len * v_part / rate + seconds_other)
                    / (seconds_matmul + seconds_other)}
        rows.append(out)
    return pd.DataFrame(rows).assign(matmul_gflops_per_s=rate / 1e9)


def _default_maps(family: str) -> int:
    """V maps of a family at its default parameters (rows written before `v_maps` was recorded)."""
    from flowbench.registry import FAMILIES

    cls = FAMILIES.get(family)
    return v_maps(cls(params=cls.Params(), vocab_size=2, seq_len=2).backbone_spec())
