"""The bench's PNGs (seaborn): one question each, readable at a glance."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from flowbench.bench.report import OVERHEAD_TARGET  # noqa: E402


def write_plots(table: pd.DataFrame, out: Path) -> list[Path]:
    sns.set_theme(style="whitegrid", context="talk", font_scale=0.7)
    written = []
    for name, draw in (("overhead", _overhead), ("samples_per_s", _samples_per_s), ("train", _train),
                       ("scaling", _scaling)):
        fig = draw(table)
        if fig is not None:
            path = out / f"{name}.png"
            fig.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(fig)
            written.append(path)
    return written


def _overhead(t: pd.DataFrame):
    o = t[t.measure == "overhead"].copy()
    if o.empty:
        return None
    o["batch, NFE"] = "batch " + o.batch.astype(str) + ", NFE " + o.nfe.astype(str)
    fig, ax = plt.subplots(figsize=(10, 0.45 * o.contestant.nunique() * o["batch, NFE"].nunique() / 2 + 2))
    sns.barplot(o, y="contestant", x="overhead_ratio", hue="batch, NFE", ax=ax, orient="h")
    ax.axvline(1.0, color="black", lw=1)
    ax.axvline(OVERHEAD_TARGET, color="crimson", ls="--", lw=1.5, label=f"target {OVERHEAD_TARGET}")
    ax.set(xlabel="sampling time / the same backbone calls alone", ylabel="",
           title="Sampler overhead per NFE (1 = the network is all the cost)")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def _samples_per_s(t: pd.DataFrame):
    lat = t[t.measure == "latency"].copy()
    if lat.empty:
        return None
    ar = lat[lat.family == "ar_gpt2"]
    rest = lat[lat.family != "ar_gpt2"]
    nfes = sorted(rest.nfe.unique()) or [None]
    fig, axes = plt.subplots(1, len(nfes), figsize=(5 * len(nfes), 4.5), sharey=True, squeeze=False)
    for ax, nfe in zip(axes[0], nfes):
        sub = rest[rest.nfe == nfe]
        sns.lineplot(sub, x="batch", y="samples_per_s", hue="contestant", marker="o", ax=ax)
        for name, rows in ar.groupby("contestant"):
            ax.plot(rows.batch, rows.samples_per_s, color="black", lw=2.5,
                    ls="-" if "kv" in name else ":", marker="s", label=f"{name} (NFE = L)")
        ax.set(xscale="log", yscale="log", title=f"NFE {nfe}", xlabel="batch size", ylabel="samples / s")
        ax.legend(fontsize=7)
    fig.suptitle("Samples/s by batch size: every family against AR (black)")
    fig.tight_layout()
    return fig


def _train(t: pd.DataFrame):
    tr = t[t.measure == "train"]
    if "phase" in tr:  # the whole training of each contestant, its phases weighted
        tr = tr[tr.phase == "all"]
    if tr.empty:
        return None
    mem = pd.concat([tr, t[t.measure == "sample_memory"]]).assign(
        phase=lambda d: d.measure.map({"train": "one training step", "sample_memory": "one sample batch"}))
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 0.4 * len(tr) + 2.5))
    col = "train_ratio_to_ar" if "train_ratio_to_ar" in tr else "tokens_per_s"
    sns.barplot(tr, y="contestant", x=col, ax=a, color="steelblue")
    a.axvline(1.0, color="black", lw=1)
    a.set(xlabel="training tokens/s relative to ar_gpt2", ylabel="", title="Training throughput")
    sns.barplot(mem, y="contestant", x="peak_mb", hue="phase", ax=b)
    b.set(xlabel="peak memory of the phase (MB)", ylabel="", title="Peak memory per phase")
    fig.tight_layout()
    return fig


def _scaling(t: pd.DataFrame):
    axes_ = [a for a in ("seq_len", "vocab_size") if (t.measure == f"scaling_{a}").any()]
    if not axes_:
        return None
    fig, axes = plt.subplots(1, len(axes_), figsize=(6.5 * len(axes_), 4.5), squeeze=False)
    for ax, axis in zip(axes[0], axes_):
        sc = t[t.measure == f"scaling_{axis}"]
        sns.lineplot(sc, x=axis, y="seconds", hue="contestant", marker="o", ax=ax)
        ax.set(xscale="log", yscale="log", xlabel=axis, ylabel="seconds per sample batch",
               title=f"Sampling time as {axis} grows")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
