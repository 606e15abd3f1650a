"""The headline figures: one line per family variant (a family and the family parameters
that vary), read at a glance.

- Against NFE: each variant's default sampler, taken as its trained line swept over the most
  NFEs (the family's default settings in the reference suites); the exact denoiser's line of
  the same sampler as a faint dashed companion in the same colour.
- Against seconds per sample: each variant's Pareto front over every sampler and setting
  (rows no faster row beats on the metric), the exact denoiser's front as the companion.
- A variant with a single point (AR: one NFE) is a point; true data is a grey band (the 5-95%
  band of its draws where the leaderboard records it, else its line).

Rows come from `seeds.collapse`: rows that differ only in training seed are one line, their
mean, with the min-max over seeds as its band (a single seed's band is its bootstrap interval).
Only the leaderboard's main sample count is drawn, tuning rows never (where a `split` column
names them), and each variant's largest training budget: nothing else is merged.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from flowbench.report.ranking import true_lines  # noqa: E402
from flowbench.report.seeds import collapse  # noqa: E402

LOG_SPAN = 10.0  # an axis whose values span this factor or more is drawn on a log scale
FAINT = dict(ls="--", lw=1.1, alpha=0.5)
BAND_NOTE = "bands: min-max over training seeds where there are several, else the 95% bootstrap interval"


def main_count(df: pd.DataFrame):
    """The sample count most rows use (the suite's N); NaN for a leaderboard without one."""
    usual = df["num_samples"].mode()
    return usual.iloc[0] if len(usual) else np.nan


def headline_lines(df: pd.DataFrame) -> pd.DataFrame:
    """The lines the headline figures may draw: rows collapsed over training seeds, at the main
    sample count, no tuning rows, each variant's (and denoiser's) largest training budget."""
    lines = collapse(df)
    n = main_count(df)
    if pd.notna(n):
        lines = lines[lines["num_samples"] == n]
    lines = lines[lines["split"] != "tuning"]
    passes = pd.to_numeric(lines["train_passes"], errors="coerce")
    top = passes.groupby([lines["variant"], lines["denoiser"]]).transform("max")
    return lines[passes.isna() | passes.eq(top)].reset_index(drop=True)


def _longest(lines: pd.DataFrame) -> str | None:
    """The line swept over the most NFEs (ties: the shortest label, the one naming fewest settings)."""
    if lines.empty:
        return None
    counts = lines.groupby("line")["nfe"].nunique()
    return sorted(counts.index, key=lambda name: (-counts[name], len(name), name))[0]


def default_lines(lines: pd.DataFrame) -> dict[str, tuple[str | None, str | None]]:
    """variant -> (its trained default line, the exact denoiser's line of the same config)."""
    out = {}
    for variant, g in lines.groupby("variant", sort=True):
        oracle = g["denoiser"] == "oracle"
        trained = _longest(g[~oracle])
        config = g.loc[g["line"] == trained, "config"].iloc[0] if trained else None
        twin = g[oracle & (g["config"] == config)] if config else g[oracle]
        out[variant] = (trained, _longest(twin))
    return out


def pareto(lines: pd.DataFrame, x: str, y: str, *, lower: bool = True) -> pd.DataFrame:
    """The rows no row at most as slow beats on y: sorted by x, each better than all before it."""
    g = lines[lines[x].notna() & lines[y].notna()].sort_values([x, y], ascending=[True, lower])
    best = g[y].cummin() if lower else g[y].cummax()
    keep = g[y] < best.shift(fill_value=np.inf) if lower else g[y] > best.shift(fill_value=-np.inf)
    return g[keep.to_numpy()]


def palette(variants: list[str]) -> dict[str, tuple]:
    colours = sns.color_palette("tab10" if len(variants) <= 10 else "husl", len(variants))
    return dict(zip(sorted(variants), colours))


def band(g: pd.DataFrame, y: str) -> tuple[pd.Series, pd.Series] | None:
    """The seed band where a point has several seeds, else the bootstrap interval; None if neither."""
    lo = pd.to_numeric(g.get(f"{y}_lo", pd.Series(np.nan, index=g.index)), errors="coerce")
    hi = pd.to_numeric(g.get(f"{y}_hi", pd.Series(np.nan, index=g.index)), errors="coerce")
    if f"{y}_seed_lo" in g:
        many = g["seeds"] > 1
        lo, hi = lo.where(~many, g[f"{y}_seed_lo"]), hi.where(~many, g[f"{y}_seed_hi"])
    if lo.isna().all():
        return None
    return lo.fillna(g[y]), hi.fillna(g[y])


def draw_line(ax, g: pd.DataFrame, x: str, y: str, *, color, label: str, faint: bool = False) -> None:
    """One line (or, for a single point, a marker with its interval as an error bar) and its band."""
    g = g[g[x].notna() & g[y].notna()].sort_values(x)
    if g.empty:
        return
    interval = band(g, y)
    if len(g) == 1:
        err = None if interval is None else np.array([[g[y].iloc[0] - interval[0].iloc[0]],
                                                       [interval[1].iloc[0] - g[y].iloc[0]]]).clip(min=0)
        ax.errorbar(g[x], g[y], yerr=err, color=color, marker="D" if not faint else "d", ms=8 if not faint else 6,
                    capsize=3, ls="none", alpha=0.5 if faint else 1.0, label=label, zorder=4)
        return
    style = FAINT if faint else dict(ls="-", lw=2.0, alpha=1.0)
    ax.plot(g[x], g[y], color=color, marker="o", ms=3.5, label=label, zorder=3, **style)
    if interval is not None:
        ax.fill_between(g[x], interval[0], interval[1], color=color, alpha=0.08 if faint else 0.2, lw=0)


def true_band(ax, df: pd.DataFrame, y: str) -> Patch | None:
    """True data at the main N: its band and value across the axes; the legend handle (None if absent)."""
    n = main_count(df)
    truth = true_lines(df[df["num_samples"] == n] if pd.notna(n) else df)
    if truth.empty or pd.isna(truth[y].iloc[0]):
        return None
    value, lo, hi = (truth[c].iloc[0] for c in (y, f"{y}_lo", f"{y}_hi"))
    ax.axhline(value, color="0.3", lw=1.0, ls=":", zorder=1)
    if pd.notna(lo) and pd.notna(hi) and hi > lo:
        ax.axhspan(lo, hi, color="0.5", alpha=0.25, lw=0, zorder=0)
        return Patch(facecolor=(0.5, 0.5, 0.5, 0.35), edgecolor="0.3", ls=":", label="true data (5-95% band)")
    return Patch(facecolor="none", edgecolor="0.3", ls=":", label="true data")


def drawn_extent(*axes) -> pd.Series:
    """The y extent of everything drawn on `axes` (lines, bands, true data)."""
    return pd.Series([v for ax in axes for v in ax.dataLim.intervaly if np.isfinite(v)], dtype=float)


def log_scales(ax, xs: pd.Series, ys: pd.Series, *, x_base: int = 10) -> None:
    """Log axes where the drawn values span LOG_SPAN or more (and are positive), their ticks
    plain numbers (NFE 1, 2, 4 ...; gen PPL 20, 50, 100 ... where it spans few decades)."""
    for values, axis, base in ((xs, ax.xaxis, x_base), (ys, ax.yaxis, 10)):
        values = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
        if not (len(values) and values.min() > 0 and values.max() / values.min() >= LOG_SPAN):
            if base == 2 and 0 < values.nunique() <= 12:  # a few NFEs on a linear axis: tick exactly those
                axis.set_major_locator(ticker.FixedLocator(sorted(values.unique())))
            continue
        (ax.set_xscale if axis is ax.xaxis else ax.set_yscale)("log", base=base)
        if base == 2:
            axis.set_major_locator(ticker.LogLocator(base=2))
        elif values.max() / values.min() < 1e3:
            axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(ticker.NullFormatter())


def _legend(fig, ax, extra: list) -> None:
    """Every labelled artist of the axes plus `extra` handles, in columns below the axes."""
    handles, labels = ax.get_legend_handles_labels()
    handles += extra
    labels += [h.get_label() for h in extra]
    fit_legend(fig, handles, labels, fontsize=8)


def fit_legend(fig, handles: list, labels: list, *, fontsize: float, most: int = 4) -> None:
    """A figure legend below the axes in the most columns (up to `most`) that keep it as wide as
    the figure or narrower."""
    if not handles:
        return
    for ncol in range(min(most, len(handles)), 0, -1):
        legend = fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=fontsize,
                            frameon=False)
        fig.canvas.draw()
        if ncol == 1 or legend.get_window_extent().width <= fig.bbox.width:
            return
        legend.remove()


def _figure(title: str):
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(9, 6.5), layout="constrained")
    ax.set_title(title, pad=16)
    return fig, ax


def nfe_figure(df: pd.DataFrame, *, y: str = "gen_ppl", ylabel: str = "gen PPL", lower: bool = True):
    """`y` against NFE: each variant's default sampler, its exact denoiser faint, true data a band."""
    lines = headline_lines(df)
    picks = default_lines(lines)
    colours = palette(list(picks))
    better = "lower" if lower else "higher"
    fig, ax = _figure(f"{ylabel} against NFE, each family's default sampler ({better} is better)")
    drawn = []
    for variant, (trained, oracle) in picks.items():
        for name, faint in ((trained, False), (oracle, True)):
            if name is None:
                continue
            g = lines[lines["line"] == name]
            sampler = name[len(variant) + 1:] if name.startswith(variant + "/") else name
            label = f"_{variant}: {sampler}" if faint else f"{variant}: {sampler}"
            if faint and trained is None:  # an oracle-only variant still gets its legend entry
                label = f"{variant}: {sampler}"
            draw_line(ax, g, "nfe", y, color=colours[variant], label=label, faint=faint)
            drawn.append(g)
    faint = any(oracle is not None for _, oracle in picks.values())
    extra = [Line2D([], [], color="0.4", **FAINT, label="exact denoiser, same sampler")] if faint else []
    truth = true_band(ax, df, y)
    extra += [truth] if truth is not None else []
    shown = pd.concat(drawn) if drawn else lines.iloc[:0]
    log_scales(ax, shown["nfe"], drawn_extent(ax), x_base=2)
    ax.set(xlabel="NFE (backbone calls per sample; AR: one per token)", ylabel=ylabel)
    _note(ax, shown)
    _legend(fig, ax, extra)
    return fig


def seconds_figure(df: pd.DataFrame, *, y: str = "gen_ppl", ylabel: str = "gen PPL", lower: bool = True):
    """`y` against seconds per sample: each variant's Pareto front over its samplers and settings."""
    lines = headline_lines(df)
    colours = palette(lines["variant"].unique().tolist())
    fig, ax = _figure(f"{ylabel} against sampling time: each family's best samplers (Pareto front)")
    drawn = []
    for variant, g in lines.groupby("variant", sort=True):
        oracle = g["denoiser"] == "oracle"
        for rows, faint in ((g[~oracle], False), (g[oracle], True)):
            front = pareto(rows, "seconds_per_sample", y, lower=lower)
            if front.empty:
                continue
            label = f"_{variant}" if faint and (~oracle).any() else variant
            draw_line(ax, front, "seconds_per_sample", y, color=colours[variant], label=label, faint=faint)
            drawn.append(front)
    faint = (lines["denoiser"] == "oracle").any()
    extra = [Line2D([], [], color="0.4", **FAINT, label="exact denoiser's front")] if faint else []
    truth = true_band(ax, df, y)
    extra += [truth] if truth is not None else []
    shown = pd.concat(drawn) if drawn else lines.iloc[:0]
    log_scales(ax, shown["seconds_per_sample"], drawn_extent(ax))
    ax.set(xlabel="seconds per sample (measured, this machine)", ylabel=ylabel)
    _note(ax, shown)
    _legend(fig, ax, extra)
    return fig


def _note(ax, shown: pd.DataFrame) -> None:
    seeds = int(shown["seeds"].max()) if len(shown) and shown["seeds"].notna().any() else 1
    n = shown["num_samples"].dropna()
    text = f"N = {n.iloc[0]:g} samples; " if len(n) else ""
    text += BAND_NOTE if seeds > 1 else "bands: 95% bootstrap interval"
    ax.text(0.5, 1.01, text, transform=ax.transAxes, ha="center", va="bottom", fontsize=7, color="0.35")
