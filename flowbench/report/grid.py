"""The full grid, one small-multiple figure per family (seaborn's FacetGrid): a panel per
variant and sampler, stacked, a line per setting (every sampler parameter, split, sample count
and budget the leaderboard varies) named in the panel's own legend beside it; the exact
denoiser's line of a setting is its faint dashed twin, true data the grey band. Rows that
differ only in training seed are one line with its seed band (seeds.collapse); nothing else
is merged.
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from flowbench.report.headline_plots import FAINT, draw_line, drawn_extent, log_scales, true_band  # noqa: E402
from flowbench.report.seeds import collapse  # noqa: E402


def settings(lines: pd.DataFrame) -> pd.Series:
    """Each line's label less its variant, sampler and denoiser: what tells lines of a panel apart."""
    prefix = lines["variant"] + "/" + lines["sampler"].astype(str)
    rest = [line[len(p):] if line.startswith(p) else line for line, p in zip(lines["line"], prefix)]
    return pd.Series([r.replace(" (oracle)", "").strip() or "defaults" for r in rest], index=lines.index)


def grid_lines(df: pd.DataFrame) -> pd.DataFrame:
    lines = collapse(df)
    return lines.assign(setting=settings(lines), panel=lines["variant"] + ": sampler " + lines["sampler"].astype(str))


def family_grid(df: pd.DataFrame, family: str, *, y: str = "gen_ppl", ylabel: str = "gen PPL"):
    """One family's FacetGrid of `y` against NFE, a panel per variant and sampler."""
    lines = grid_lines(df)
    lines = lines[(lines["family"] == family) & lines[y].notna()]
    panels = sorted(lines["panel"].unique())
    colours = {panel: dict(zip(sorted(g["setting"].unique()), sns.color_palette(
        "tab10" if g["setting"].nunique() <= 10 else "husl", g["setting"].nunique())))
        for panel, g in lines.groupby("panel")}
    sns.set_theme(style="whitegrid", context="paper")
    grid = sns.FacetGrid(lines, row="panel", row_order=panels, height=2.8, aspect=2.4, sharex=False, sharey=True,
                         despine=False)

    def panel(data: pd.DataFrame, **_) -> None:
        ax = plt.gca()
        name = data["panel"].iloc[0]
        for (setting, denoiser), g in data.groupby(["setting", "denoiser"]):
            draw_line(ax, g, "nfe", y, color=colours[name][setting], label="_", faint=denoiser == "oracle")
        true_band(ax, df, y)

    grid.map_dataframe(panel)
    for ax in grid.axes.flat:  # NFE not shared (samplers sweep different NFEs); its scale is
        log_scales(ax, lines["nfe"], drawn_extent(*grid.axes.flat), x_base=2)
    grid.set_axis_labels("NFE", ylabel)
    grid.set_titles(row_template="{row_name}")
    grid.figure.suptitle(f"{family}: {ylabel} against NFE, every sampler and setting\n(bands: min-max over training "
                         "seeds where several, else 95% bootstrap interval; grey: true data)", fontsize=9)
    grid.tight_layout()
    # after mapping and layout (FacetGrid drops the legends it finds); saved with bbox_inches='tight'
    for name, ax in grid.axes_dict.items():
        handles = [Line2D([], [], color=c, lw=2, marker="o", ms=3.5, label=s) for s, c in colours[name].items()]
        if lines.loc[lines["panel"] == name, "denoiser"].eq("oracle").any():
            handles.append(Line2D([], [], color="0.4", **FAINT, label="dashed, faint: exact denoiser"))
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False,
                  title="settings", title_fontsize=7)
    return grid.figure


def grid_name(family: str) -> str:
    return re.sub(r"[^\w.-]+", "_", family) + "_grid.png"


def family_grids(df: pd.DataFrame, out: Path) -> list[str]:
    """`<family>_grid.png` for every family of the leaderboard; returns the file names."""
    names = []
    for family in sorted(df["family"].astype(str).unique()):
        fig = family_grid(df, family)
        fig.savefig(out / grid_name(family), dpi=100, bbox_inches="tight")
        plt.close(fig)
        names.append(grid_name(family))
    return names
