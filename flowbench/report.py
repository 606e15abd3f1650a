"""Turn a leaderboard CSV into report.md (tables) and gen_ppl_vs_nfe.png beside it."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def load(csv_path: str | Path) -> pd.DataFrame:
    df = pd.read_csv(csv_path)
    df["run"] = (df["family"] + _varied_params(df) + "/" + df["sampler"]
                 + df["denoiser"].map({"oracle": " (oracle)"}).fillna(""))
    for col in ("t_star", "beta", "alpha"):
        if df[col].notna().any():
            df["run"] += df[col].map(lambda v, c=col: f" {c}={v:g}" if pd.notna(v) else "")
    return df


def _varied_params(df: pd.DataFrame) -> pd.Series:
    """' key=value' for the family params that differ between runs of one family (e.g. dfm's source)."""
    params = df["family_params"].fillna("{}").map(lambda p: json.loads(p or "{}"))
    label = pd.Series("", index=df.index)
    for family, idx in df.groupby("family").groups.items():
        rows = params.loc[idx]
        keys = sorted({k for p in rows for k in p if k not in ("t_star", "beta", "alpha")})
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

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for run, g in df.groupby("run"):
        g = g.groupby("nfe")[["gen_ppl", "entropy"]].mean().reset_index()
        style = "--" if "(oracle)" in run else "-"
        axes[0].plot(g["nfe"], g["gen_ppl"], style, marker="o", label=run)
        axes[1].plot(g["nfe"], g["entropy"], style, marker="o", label=run)
    if df["ppl_floor"].notna().any():
        axes[0].axhline(df["ppl_floor"].dropna().iloc[0], color="k", lw=0.8, ls=":", label="true data")
    for ax, name in zip(axes, ("gen PPL (lower is better)", "sample entropy (nats)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("NFE")
        ax.set_title(name)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(csv_path.parent / "gen_ppl_vs_nfe.png", dpi=110)
    plt.close(fig)
    return csv_path.parent / "report.md"
