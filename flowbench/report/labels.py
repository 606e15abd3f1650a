"""A leaderboard as a DataFrame whose `run` label names everything that distinguishes a row
but NFE, so that no two configurations ever share a label (and nothing is averaged)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from flowbench.leaderboard import COLUMNS, SWEEP_COLUMNS

TEMPERING_DEFAULTS = {"temperature": 1.0, "top_p": 1.0}
SPLIT_TAGS = {"tuning": " [tuning]", "held_out": " [held-out]"}
OPTIONAL = ("sample_seed", "split")  # columns of newer leaderboards; absent: one sampling seed, no split


class ReportError(ValueError):
    """A path that holds no leaderboard, or a leaderboard the report cannot read (one line)."""


def leaderboard_csv(path: str | Path) -> Path:
    """The leaderboard.csv of a results folder, or the CSV file given."""
    path = Path(path)
    csv = path / "leaderboard.csv" if path.is_dir() else path
    if not csv.is_file():
        raise ReportError(f"no leaderboard at {path} (expected a results folder or its leaderboard.csv)")
    return csv


def load(csv_path: str | Path) -> pd.DataFrame:
    """The leaderboard's current rows with `variant` (family and the family parameters that vary:
    one trained model per training seed and budget), `config` (variant, sampler and every
    parameter that varies), `setting` (config, plus oracle, training budget and sample count where they vary),
    `line` (setting, plus split and sampling seed: the report's line, one per group of training
    seeds) and `run` (line, plus the training seed where it varies: one per row)."""
    df = pd.read_csv(csv_path, dtype={"row_key": str, "supersedes": str})
    return label(df)


def label(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for col in (*COLUMNS, *OPTIONAL):  # an older leaderboard lacks the newer columns
        if col not in df:
            df[col] = np.nan
    df["split"] = df["split"].astype(object).where(df["split"].notna(), "").astype(str)
    bad = set(df["split"]) - {"", *SPLIT_TAGS}
    if bad:
        raise ReportError(f"column 'split': unknown value {sorted(bad)[0]!r} (expected 'tuning', 'held_out' or empty)")
    params = df["sampler_params"].astype(object).where(df["sampler_params"].notna(), "{}")
    for col in SWEEP_COLUMNS:  # older rows kept some sweep knobs (AR's temperature) in the JSON only
        from_json = pd.to_numeric(params.map(lambda p, c=col: json.loads(p or "{}").get(c)), errors="coerce")
        df[col] = pd.to_numeric(df[col], errors="coerce").fillna(from_json)
    df[list(SWEEP_COLUMNS)] = df[list(SWEEP_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    if df["supersedes"].notna().any():  # rows of an older family/corpus/judge version: only the newest count
        df = df[~df["row_key"].isin(df["supersedes"].dropna())].reset_index(drop=True)
    df["variant"] = df["family"] + _varied(df, "family_params", by=["family"])
    df["config"] = df["variant"] + "/" + df["sampler"] + _varied(df, "sampler_params", by=["family", "sampler"])
    for col in SWEEP_COLUMNS:  # a knob at its default (temperature 1, top_p 1) goes unnamed
        default = TEMPERING_DEFAULTS.get(col)
        df["config"] += df[col].map(lambda v, c=col, d=default: f" {c}={v:g}" if pd.notna(v) and v != d else "")
    df["run"] = df["config"] + df["denoiser"].map({"oracle": " (oracle)"}).fillna("")
    if df.loc[df["denoiser"] == "trained", "train_passes"].nunique() > 1:
        df["run"] += df["train_passes"].map(lambda v: f" passes={v:g}" if pd.notna(v) else "")
    if df["num_samples"].nunique() > 1:  # a run's own sample count (RunEntry.eval): the rest unnamed
        usual = df["num_samples"].mode().iloc[0]
        df["run"] += df["num_samples"].map(lambda v: f" samples={v:g}" if pd.notna(v) and v != usual else "")
    compiled = df["compiled"].astype(str).str.lower().eq("true")  # empty in rows from before the column
    df.loc[compiled, "run"] += " compiled"
    for col in ("suite", "corpus"):
        if col in df and df[col].nunique() > 1:  # a merged leaderboard: the suite is part of the label
            df["run"] = df[col].astype(str) + ": " + df["run"]
            df["variant"] = df[col].astype(str) + ": " + df["variant"]
    df["setting"] = df["run"]  # what a tuning row and its held-out twin share
    df["run"] += df["split"].map(SPLIT_TAGS).fillna("")
    # a row without a split was sampled with its training seed (no eval.sample_seeds): its
    # sampling seed is that seed, not an axis of its own, so it names and groups nothing
    df["sampling_seed"] = pd.to_numeric(df["sample_seed"], errors="coerce").where(df["split"] != "")
    if df.groupby("split")["sampling_seed"].nunique().gt(1).any():
        df["run"] += df["sampling_seed"].map(lambda v: f" sample_seed={v:g}" if pd.notna(v) else "")
    df["line"] = df["run"]  # the report's line: rows that differ only in training seed share it
    if df["seed"].nunique() > 1:
        df["run"] += df["seed"].map(lambda v: f" seed={v:g}" if pd.notna(v) else "")
    df["clash"] = ""
    clash = df[df.duplicated(["run", "nfe"], keep=False)]
    if len(clash):  # rows that differ in a column the label does not name: never average them
        df.loc[clash.index, "clash"] = " #" + clash["row_key"].astype(str).str[:6]
        df["run"] += df["clash"]
        df["line"] += df["clash"]
    df["seconds_per_sample"] = 1.0 / df["samples_per_s"]
    return df


def _varied(df: pd.DataFrame, column: str, *, by: list[str]) -> pd.Series:
    """' key=value' for the keys of a JSON column that differ between rows of one `by` group (a
    family's parameters within the family, a sampler's within the family's sampler), each row
    naming only the keys it has."""
    params = df[column].astype(object).where(df[column].notna(), "{}").map(lambda p: json.loads(p or "{}"))
    out = pd.Series("", index=df.index)
    for _, group in df.groupby(by):
        idx = group.index
        rows = params.loc[idx]
        keys = sorted({k for p in rows for k in p if k not in SWEEP_COLUMNS})
        varying = [k for k in keys if len({json.dumps(p.get(k), sort_keys=True) for p in rows}) > 1]
        out.loc[idx] = rows.map(lambda p: "".join(f" {k}={_short(p[k])}" for k in varying if k in p))
    return out


def _short(value) -> str:
    if isinstance(value, dict):  # a nested parameter (e.g. a time distribution): its set fields
        return "(" + ",".join(f"{k}={v}" for k, v in value.items()) + ")"
    return str(value)


def first(df: pd.DataFrame, column: str):
    """The column's first value, or None where no row has one."""
    values = df[column].dropna() if column in df else []
    return values.iloc[0] if len(values) else None
