"""A steering leaderboard as a table: one line per row, never merging rows that differ."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

SHOWN = ["denoiser", "budget_nfe", "method", "nfe", "eta", "horizon", "n_best", "passes", "reward_mean",
         "topic_share", "target_topic_share", "topic_kl", "tilted_nll", "target_nll_floor", "entropy", "samples_per_s"]


def summary(csv_path: str | Path) -> str:
    df = pd.read_csv(csv_path)
    df = df.sort_values(["denoiser", "budget_nfe", "method", "eta", "horizon"], na_position="first")
    return f"{csv_path}\n" + df[SHOWN].to_string(index=False, float_format=lambda v: f"{v:.3g}")
