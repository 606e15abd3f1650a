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
    """The leaderboard with a `run` label that names everything distinguishing its rows but NFE:
    family params, sampler params and sweep columns that vary, the training budget when it
    varies, the seed when several. A label never stands for two configurations."""
    df = pd.read_csv(csv_path, dtype={"row_key": str, "supersedes": str})
    if "supersedes" in df:  # rows of an older family/corpus/judge version: only the newest count
        df = df[~df["row_key"].isin(df["supersedes"].dropna())].reset_index(drop=True)
    df["config"] = df["family"] + _varied(df, "family_params") + "/" + df["sampler"] + _varied(df, "sampler_params")
    for col in SWEEP_COLUMNS:
        if df[col].notna().any():
            df["config"] += df[col].map(lambda v, c=col: f" {c}={v:g}" if pd.notna(v) else "")
    df["run"] = df["config"] + df["denoiser"].map({"oracle": " (oracle)"}).fillna("")
    for col, name in (("train_passes", "passes"), ("seed", "seed")):
        if col in df and df.loc[df["denoiser"] == "trained", col].nunique() > 1:
            df["run"] += df[col].map(lambda v, n=name: f" {n}={v:g}" if pd.notna(v) else "")
    clash = df[df.duplicated(["run", "nfe"], keep=False)]
    if len(clash):  # rows that differ in a column the label does not name: never average them
        df.loc[clash.index, "run"] += " #" + clash["row_key"].astype(str).str[:6]
    return df


def _varied(df: pd.DataFrame, column: str) -> pd.Series:
    """' key=value' for the keys of a JSON column that differ between rows of one family."""
    params = df[column].fillna("{}").map(lambda p: json.loads(p or "{}"))
    label = pd.Series("", index=df.index)
    for family, idx in df.groupby("family").groups.items():
        rows = params.loc[idx]
        keys = sorted({k for p in rows for k in p if k not in SWEEP_COLUMNS})
        varying = [k for k in keys if len({json.dumps(p.get(k), sort_keys=True) for p in rows}) > 1]
        label.loc[idx] = rows.map(lambda p: "".join(f" {k}={_short(p.get(k))}" for k in varying))
    return label


def _short(value) -> str:
    if isinstance(value, dict):  # a nested parameter (e.g. a time distribution): its set fields
        return "(" + ",".join(f"{k}={v}" for k, v in value.items()) + ")"
    return str(value)


def write_report(csv_path: str | Path) -> Path:
    csv_path = Path(csv_path)
    df = load(csv_path)
    lines = [f"# {df['suite'].iloc[0]}", "",
             f"{len(df)} rows; judge `{df['judge'].iloc[0]}`"
             + (f"; true-data floor gen PPL {df['ppl_floor'].dropna().iloc[0]:.2f}" if df["ppl_floor"].notna().any() else "")
             + f"; git {', '.join(sorted(df['git_sha'].astype(str).unique()))}.", ""]
    cols = ["gen_ppl", "gen_ppl_mean", "nll_median", "entropy", "samples_per_s", "backbone_calls"]
    table = df[["run", "nfe", *cols]].round(3).sort_values(["run", "nfe"])
    lines += [table.to_markdown(index=False), ""]
    (csv_path.parent / "report.md").write_text("\n".join(lines))

    # one colour per trained run; its oracle twin shares it, dashed
    bases = sorted(df["run"].str.replace(" (oracle)", "", regex=False).unique())
    cmap = plt.get_cmap("tab20" if len(bases) > 10 else "tab10")
    colour = {b: cmap(i % cmap.N) for i, b in enumerate(bases)}
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
    for run, g in df.groupby("run"):
        g = g.sort_values("nfe")
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
    if "train_passes" in df and df.loc[df["denoiser"] == "trained", "train_passes"].nunique() > 1:
        lines += learning_curves(df, csv_path.parent / "gen_ppl_vs_train_compute.png")
        (csv_path.parent / "report.md").write_text("\n".join(lines))
    return csv_path.parent / "report.md"


def learning_curves(df: pd.DataFrame, png: Path) -> list[str]:
    """Best-over-NFE gen PPL of every trained config against its training compute (backbone
    forward + backward passes of one batch), its oracle's best as a dashed line: a family that
    has not yet turned shows a curve still falling, one that plateaus a flat one."""
    trained, oracle = df[df["denoiser"] == "trained"], df[df["denoiser"] == "oracle"]
    best = (trained.loc[trained.groupby(["config", "train_passes"])["gen_ppl"].idxmin(),
                        ["config", "train_passes", "train_steps", "nfe", "gen_ppl", "entropy"]]
            .sort_values(["config", "train_passes"]))
    fig, ax = plt.subplots(figsize=(10, 5))
    cmap = plt.get_cmap("tab10")
    for i, (config, g) in enumerate(best.groupby("config")):
        colour = cmap(i % 10)
        ax.plot(g["train_passes"], g["gen_ppl"], marker="o", color=colour, label=config)
        twin = oracle[oracle["config"] == config]
        if len(twin):
            ax.axhline(twin["gen_ppl"].min(), color=colour, ls="--", lw=0.8)
    if df["ppl_floor"].notna().any():
        ax.axhline(df["ppl_floor"].dropna().iloc[0], color="k", lw=0.8, ls=":", label="true data")
    ax.set(xscale="log", yscale="log", xlabel="training compute (backbone forward+backward passes)",
           ylabel="best-NFE gen PPL", title="quality against training compute (dashed: the oracle denoiser)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return ["## Quality against training compute", "",
            "Best gen PPL over NFE per trained configuration and budget.", "",
            best.round(3).to_markdown(index=False), ""]
