"""The report's figures (seaborn). The headline figures (a metric against NFE and against
seconds) draw one line per family variant (flowbench/report/headline_plots.py); the full grid of
samplers and settings goes to one small-multiple figure per family (flowbench/report/grid.py).
The sweeps of one knob and the learning curves draw every run in its own colour and marker,
intervals as bands, true data as a dotted line (or a star on the frontier)."""
from __future__ import annotations

from itertools import cycle
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from flowbench.report.grid import family_grids  # noqa: E402
from flowbench.report.headline_plots import LOG_SPAN, fit_legend, nfe_figure, seconds_figure  # noqa: E402
from flowbench.report.seeds import collapse  # noqa: E402
from flowbench.report.tables import true_data_row  # noqa: E402

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "p", "h")


def styles(runs: list[str]) -> dict[str, dict]:
    """One (colour, marker) per run: a husl palette as wide as the runs, markers cycling, an
    oracle dashed."""
    palette = sns.color_palette("husl", max(len(runs), 1))
    markers = cycle(MARKERS)
    return {r: dict(color=palette[i], marker=next(markers), ls="--" if "(oracle)" in r else "-")
            for i, r in enumerate(sorted(runs))}


def _curves(ax, df: pd.DataFrame, x: str, y: str, style: dict[str, dict], *, group: str = "run") -> None:
    for run, g in df[df[y].notna()].groupby(group):
        g = g.sort_values(x)
        ax.plot(g[x], g[y], ms=4, lw=1.2, label=run, **style[run])
        if f"{y}_lo" in g and g[f"{y}_lo"].notna().any():
            ax.fill_between(g[x], g[f"{y}_lo"], g[f"{y}_hi"], color=style[run]["color"], alpha=0.15, lw=0)


def _floor(ax, value, text="true data") -> None:
    if value is not None and np.isfinite(value):
        ax.axhline(value, color="k", lw=0.9, ls=":", label=text)


def _save(fig, ax, path: Path) -> str:
    fit_legend(fig, *ax.get_legend_handles_labels(), fontsize=7)
    return save(fig, path)


def save(fig, path: Path) -> str:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _figure(title: str):
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(10, 7), layout="constrained")
    ax.set_title(title)
    return fig, ax


def metric_vs(df: pd.DataFrame, out: Path, *, x: str, y: str, xlabel: str, ylabel: str, name: str,
              floor=None, logx: bool = False, logy: bool = False, group: str = "run") -> str:
    style = styles(df[group].unique().tolist())
    fig, ax = _figure(f"{ylabel} against {xlabel}")
    _curves(ax, df, x, y, style, group=group)
    _floor(ax, floor)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if logx:
        ax.set_xscale("log", base=2 if x == "nfe" else 10)
    if logy:
        ax.set_yscale("log")
    return _save(fig, ax, out / name)


def frontier(df: pd.DataFrame, out: Path) -> str:
    """Gen PPL against entropy, one colour per family (Generative Frontiers, arXiv 2604.02718):
    families compare at matched entropy; true data is the star a perfect generator sits on.
    Rows over training seeds are one point, their mean."""
    truth = true_data_row(df)
    df = collapse(df)
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(11, 6))
    families = sorted(df["family"].unique())
    palette = dict(zip(families, sns.color_palette("husl", len(families))))
    sns.scatterplot(data=df, x="entropy", y="gen_ppl", hue="family", style="denoiser", palette=palette,
                    hue_order=families, s=30, ax=ax)
    for col, lo, hi in (("gen_ppl", "gen_ppl_lo", "gen_ppl_hi"), ("entropy", "entropy_lo", "entropy_hi")):
        if df[lo].notna().any():
            err = np.vstack([df[col] - df[lo], df[hi] - df[col]]).clip(min=0)
            ax.errorbar(df["entropy"], df["gen_ppl"], **({"yerr": err} if col == "gen_ppl" else {"xerr": err}),
                        fmt="none", ecolor="0.6", lw=0.6, zorder=0)
    if df["temperature"].nunique() > 1:  # a temperature sweep: join each configuration's points
        for _, g in df.groupby(["run", "nfe"]):
            if len(g) > 1:
                g = g.sort_values("temperature")
                ax.plot(g["entropy"], g["gen_ppl"], color=palette[g["family"].iloc[0]], lw=0.8)
    if truth["entropy"] is not None and truth["gen_ppl"] is not None:
        ax.scatter([truth["entropy"]], [truth["gen_ppl"]], marker="*", s=250, color="k", label="true data", zorder=5)
    ax.set(xlabel="sample entropy (nats, higher is more diverse)", ylabel="gen PPL (lower is better)",
           yscale="log", title="quality-diversity frontier: gen PPL against entropy")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(out / "gen_ppl_vs_entropy.png", dpi=110)
    plt.close(fig)
    return "gen_ppl_vs_entropy.png"


def learning_curves(df: pd.DataFrame, out: Path) -> tuple[str, pd.DataFrame]:
    """Best-over-NFE gen PPL of every trained config against its training compute, its oracle's
    best as a dashed line."""
    lines = collapse(df)  # rows over training seeds: their mean, never the best seed
    trained, oracle = lines[lines["denoiser"] == "trained"], lines[lines["denoiser"] == "oracle"]
    best = (trained.loc[trained.groupby(["config", "train_passes"])["gen_ppl"].idxmin(),
                        ["config", "train_passes", "train_steps", "nfe", "gen_ppl", "gen_ppl_lo", "gen_ppl_hi",
                         "entropy"]].sort_values(["config", "train_passes"]))
    style = styles(best["config"].unique().tolist())
    fig, ax = _figure("quality against training compute (dashed: the oracle denoiser)")
    _curves(ax, best, "train_passes", "gen_ppl", style, group="config")
    for config, s in style.items():
        twin = oracle[oracle["config"] == config]
        if len(twin):
            ax.axhline(twin["gen_ppl"].min(), color=s["color"], ls="--", lw=0.8)
    _floor(ax, true_data_row(df)["gen_ppl"])
    ax.set(xscale="log", yscale="log", xlabel="training compute (backbone forward+backward passes)",
           ylabel="best-NFE gen PPL")
    return _save(fig, ax, out / "gen_ppl_vs_train_compute.png"), best


def all_figures(df: pd.DataFrame, out: Path) -> tuple[list[str], pd.DataFrame | None]:
    """Write every figure the leaderboard supports; returns their file names (and the
    learning-curve table when the suite varies the training budget)."""
    truth = true_data_row(df)
    names = [save(nfe_figure(df), out / "gen_ppl_vs_nfe.png"),
             save(seconds_figure(df), out / "gen_ppl_vs_seconds.png"),
             frontier(df, out)]
    if df["mauve"].notna().any():
        names.append(save(nfe_figure(df, y="mauve", ylabel="MAUVE", lower=False), out / "mauve_vs_nfe.png"))
    if df["bigram_kl"].notna().any():
        names.append(save(nfe_figure(df, y="bigram_kl", ylabel="bigram KL (nats)"), out / "bigram_kl_vs_nfe.png"))
    for knob in ("t_star", "beta"):
        swept = collapse(df)
        swept = swept[swept[knob].notna()]
        if swept[knob].nunique() > 1:
            swept = swept.assign(curve=swept["run"].str.replace(rf" {knob}=\S+", "", regex=True)
                                 + " NFE " + swept["nfe"].astype(int).astype(str))
            values = swept[knob][swept[knob] > 0]  # beta's sweep spans decades: a log axis
            wide = len(values) == len(swept) and values.max() / values.min() >= LOG_SPAN
            names.append(metric_vs(swept, out, x=knob, y="gen_ppl", xlabel=knob, ylabel="gen PPL", logx=bool(wide),
                                   name=f"gen_ppl_vs_{knob}.png", floor=truth["gen_ppl"], logy=True, group="curve"))
    curves = None
    if df.loc[df["denoiser"] == "trained", "train_passes"].nunique() > 1:
        name, curves = learning_curves(df, out)
        names.append(name)
    return names + family_grids(df, out), curves
