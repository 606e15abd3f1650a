"""A leaderboard as a DataFrame whose `run` label names everything that distinguishes a row
but NFE, so that no two configurations ever share a label (and nothing is averaged)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from flowbench.leaderboard import COLUMNS, SWEEP_COLUMNS

TEMPERING_DEFAULTS = {"temperature": 1.0, "top_p": 1.0}


def load(csv_path: str | Path) -> pd.DataFrame:
    """The leaderboard's current rows with `config` (family, sampler and every parameter that
    varies) and `run` (config, plus oracle, training budget and seed where they vary)."""
    df = pd.read_csv(csv_path, dtype={"row_key": str, "supersedes": str})
    return label(df)


def label(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for col in COLUMNS:  # an older leaderboard lacks the newer columns
        if col not in df:
            df[col] = np.nan
    params = df["sampler_params"].astype(object).where(df["sampler_params"].notna(), "{}")
    for col in SWEEP_COLUMNS:  # older rows kept some sweep knobs (AR's temperature) in the JSON only
        from_json = pd.to_numeric(params.map(lambda p, c=col: json.loads(p or "{}").get(c)), errors="coerce")
        df[col] = pd.to_numeric(df[col], errors="coerce").fillna(from_json)
    df[list(SWEEP_COLUMNS)] = df[list(SWEEP_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    if df["supersedes"].notna().any():  # rows of an older family/corpus/judge version: only the newest count
        df = df[~df["row_key"].isin(df["supersedes"].dropna())].reset_index(drop=True)
    df["config"] = (df["family"] + _varied(df, "family_params", by=["family"]) + "/" + df["sampler"]
                    + _varied(df, "sampler_params", by=["family", "sampler"]))
    for col in SWEEP_COLUMNS:  # a knob at its default (temperature 1, top_p 1) goes unnamed
        default = TEMPERING_DEFAULTS.get(col)
        df["config"] += df[col].map(lambda v, c=col, d=default: f" {c}={v:g}" if pd.notna(v) and v != d else "")
    df["run"] = df["config"] + df["denoiser"].map({"oracle": " (oracle)"}).fillna("")
    for col, name in (("train_passes", "passes"), ("seed", "seed")):
        if df.loc[df["denoiser"] == "trained", col].nunique() > 1:
            df["run"] += df[col].map(lambda v, n=name: f" {n}={v:g}" if pd.notna(v) else "")
    if df["num_samples"].nunique() > 1:  # a run's own sample count (RunEntry.eval): the rest unnamed
        usual = df["num_samples"].mode().iloc[0]
        df["run"] += df["num_samples"].map(lambda v: f" samples={v:g}" if pd.notna(v) and v != usual else "")
    compiled = df["compiled"].astype(str).str.lower().eq("true")  # empty in rows from before the column
    df.loc[compiled, "run"] += " compiled"
    for col in ("suite", "corpus"):
        if col in df and df[col].nunique() > 1:  # a merged leaderboard: the suite is part of the label
            df["run"] = df[col].astype(str) + ": " + df["run"]
    clash = df[df.duplicated(["run", "nfe"], keep=False)]
    if len(clash):  # rows that differ in a column the label does not name: never average them
        df.loc[clash.index, "run"] += " #" + clash["row_key"].astype(str).str[:6]
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
