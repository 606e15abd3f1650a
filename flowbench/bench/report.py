"""summary.md: the bench's tables a person reads (each row one configuration; nothing averaged
across rows that differ in a parameter)."""
from __future__ import annotations

import pandas as pd

from flowbench.bench.vocab import summary_lines

OVERHEAD_TARGET = 1.05


def _md(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, floatfmt=".3g")


def summary(table: pd.DataFrame) -> str:
    t = table
    meta = t.iloc[0]
    parts = [f"# Bench: d_model={meta.d_model} x {meta.n_layers} layers, {meta.threads} thread(s), "
             f"{meta.device}, torch {meta.torch}, git {meta.git_sha}",
             "", "Networks are randomly initialised: cost does not depend on the weights. Times are medians; "
             "`spread` is (max - min) / median of the repeats.", ""]
    measures = ["overhead", "latency", "train", "sample_memory", "scaling_seq_len", "scaling_vocab_size"]
    if "steps_done" in t and t.steps_done.iloc[0] < t.steps_total.iloc[0]:  # an interrupted bench
        missing = [m for m in measures if m not in set(t.measure)]
        parts += [f"**Incomplete run**: {t.steps_done.iloc[0]} of {t.steps_total.iloc[0]} steps measured; "
                  f"not measured at all: {', '.join(missing) or 'none'}.", ""]
    base = t[t.measure == "overhead"]
    if len(base):
        cols = ["contestant", "seq_len", "vocab_size", "batch", "nfe", "backbone_calls", "calls_per_run",
                "seconds", "forward_seconds", "overhead_ratio", "spread", "forward_spread"]
        o = base[[c for c in cols if c in base]]  # calls_per_run: not in runs made before it existed
        parts += [f"## Sampler overhead (sampling time / the same backbone calls alone; target <= {OVERHEAD_TARGET})",
                  "", _md(o), ""]
    lat = t[t.measure == "latency"]
    if len(lat):
        cols = ["contestant", "batch", "nfe", "calls_per_run", "seconds", "spread", "samples_per_s"]
        cols += [c for c in t.columns if c.startswith("speedup_vs_")]
        parts += ["## Latency and samples/s by batch and NFE", "", _md(lat[[c for c in cols if c in lat]]), ""]
    tr = t[t.measure == "train"]
    if len(tr):
        cols = ["contestant", "phase", "phase_share", "train_cost", "calls_per_step", "ms_per_step", "spread",
                "pass_ratio_to_bare", "floor_ratio_to_bare", "backbone_ratio_to_bare", "floor_ms", "tokens_per_s", "train_ratio_to_ar",
                "peak_mb"]
        tr = tr.assign(ms_per_step=1e3 * tr.seconds)
        if "floor_seconds" in tr:  # not in runs made before the floor was measured
            tr = tr.assign(floor_ms=1e3 * tr.floor_seconds)
        bare = t[t.measure == "train_bare"]
        head = "## Training: ms per optimiser step by phase (random tokens), against a bare backbone step"
        note = ("`train_cost`: declared backbone passes per step; `pass_ratio_to_bare`: ms per declared pass / "
                "a bare backbone step's ms (tokens in, CE, AdamW, same shape), median over interleaved rounds; "
                "`floor_ratio_to_bare`: the same if the step did only its declared passes, each at the cost of "
                "a bare step of the family's own backbone (its time conditioning and input: "
                "`backbone_ratio_to_bare`), and its family's necessary own work (`floor_ms` a step: draws, "
                "path, input maps, soft targets; `Family.training_floor_work`), empty where the family "
                "declares none; "
                "phase `all`: the phases weighted by their share of the steps.")
        if len(bare):
            b = bare.iloc[0]
            clock = b.get("clock", "wall")
            note += (f" Bare backbone step: {1e3 * b.seconds:.3g} ms (spread {b.spread:.2g}), "
                     f"batch {int(b.batch)}; {'CPU' if clock == 'cpu' else 'wall'} time.")
        parts += [head, "", note, "", _md(tr[[c for c in cols if c in tr]]), ""]
    mem = t[t.measure == "sample_memory"]
    if len(mem):
        parts += ["## Peak memory of one sample batch", "", _md(mem[["contestant", "batch", "nfe", "peak_mb"]]), ""]
    for axis in ("seq_len", "vocab_size"):
        sc = t[t.measure == f"scaling_{axis}"]
        if len(sc):
            wide = sc.pivot_table(index="contestant", columns=axis, values="seconds", aggfunc="first")
            parts += [f"## Sampling seconds of one batch of {int(sc.batch.iloc[0])} as {axis} grows "
                      f"(NFE {sorted(set(sc[sc.family != 'ar_gpt2'].nfe))}; AR: NFE = L)", "",
                      wide.reset_index().to_markdown(index=False, floatfmt=".3g"), ""]
    parts += summary_lines(t)
    return "\n".join(parts)
