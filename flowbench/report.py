"""Turn a leaderboard CSV into report.md (tables) and gen_ppl_vs_nfe.png beside it."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from flowbench.leaderboard import SWEEP_COLUMNS  # noqa: E402


def load(csv_path: str | Path) -> pd.DataFrame:
    df = pd.read_csv(csv_path)
    df["run"] = (df["family"] + _varied_params(df) + "/" + df["sampler"]
                 + df["denoiser"].map({"oracle": " (oracle)"}).fillna(""))
    for col in SWEEP_COLUMNS:
        if df[col].notna().any():
            df["run"] += df[col].map(lambda v, c=col: f" {c}={v:g}" if pd.notna(v) else "")
    return df


def _varied_params(df: pd.DataFrame) -> pd.Series:
    """' key=value' for the family params that differ between runs of one family (e.g. a noise source)."""
    params = df["family_params"].fillna("{}").map(lambda p: json.loads(p or "{}"))
    label = pd.Series("", index=df.index)
    for family, idx in df.groupby("family").groups.items():
        rows = params.loc[idx]
        keys = sorted({k for p in rows for k in p if k not in SWEEP_COLUMNS})
        varying = [k for k in keys if len({json.dumps(p.get(k)) for p in rows}) > 1]
        label.loc[idx] = rows.map(lambda p: "".join(f" {k}={p.get(k)}" for k in varying))
    return label


def write_report(csv_path: str | Path) -> Path:
    csv_path = Path(csv_path)
    df = load(csv_path)
    lines = [f"# {df['suite'].iloc[0]}", "",
             f"{len(df)} rows; judge `{df['judge'].iloc[0]}`"
             + (f"; true-data floor gen PPL {df['ppl_floor'].dropna().iloc[0]:.2f}" if df["ppl_floor"].notna().any() else "")
             + f"; git {', '.join(sorted(df['git_sha'].astype(str).unique()))}.", ""]
    cols = ["gen_ppl", "gen_ppl_mean", "nll_median", "entropy", "samples_per_s", "backbone_calls"]
    table = (df.groupby(["run", "nfe"])[cols].mean().round(3).reset_index()
             .sort_values(["run", "nfe"]))
    lines += [table.to_markdown(index=False), ""]
    (csv_path.parent / "report.md").write_text("\n".join(lines))

    # one colour per trained run; its oracle twin shares it, dashed
    bases = sorted(df["run"].str.replace(" (oracle)", "", regex=False).unique())
    cmap = plt.get_cmap("tab20" if len(bases) > 10 else "tab10")
    colour = {b: cmap(i % cmap.N) for i, b in enumerate(bases)}
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
    for run, g in df.groupby("run"):
        g = g.groupby("nfe")[["gen_ppl", "entropy"]].mean().reset_index()
        oracle = "(oracle)" in run
        kw = dict(ls="--" if oracle else "-", marker="o", ms=3, color=colour[run.replace(" (oracle)", "")],
                  label=run)
        axes[0].plot(g["nfe"], g["gen_ppl"], **kw)
        axes[1].plot(g["nfe"], g["entropy"], **kw)
    if df["ppl_floor"].notna().any():
        axes[0].axhline(df["ppl_floor"].dropna().iloc[0], color="k", lw=0.8, ls=":", label="true data")
    for ax, name in zip(axes, ("gen PPL (lower is better)", "sample entropy (nats)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("NFE")
        ax.set_title(name)
    axes[0].set_yscale("log")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(0.74, 0.5))
    fig.tight_layout(rect=(0, 0, 0.73, 1))
    fig.savefig(csv_path.parent / "gen_ppl_vs_nfe.png", dpi=110)
    plt.close(fig)
    return csv_path.parent / "report.md"
