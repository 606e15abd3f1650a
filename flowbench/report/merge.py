"""Merge the leaderboards of several suites into one CSV with the leaderboard's column order
(columns this code does not know follow, sorted), keeping only current rows."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from flowbench.leaderboard import COLUMNS
from flowbench.report.labels import leaderboard_csv


def merge(paths: list[str | Path], out: str | Path) -> Path:
    frames = [pd.read_csv(leaderboard_csv(p), dtype=str, keep_default_na=False) for p in paths]
    df = pd.concat(frames, ignore_index=True)
    replaced = set(df.get("supersedes", pd.Series(dtype=str))) - {""}
    df = df[~df["row_key"].isin(replaced)].drop_duplicates("row_key")
    extra = sorted(c for c in df.columns if c not in COLUMNS)
    df = df.reindex(columns=COLUMNS + extra, fill_value="")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    return out
