"""A steering leaderboard as a table: one line per row, never merging rows that differ."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

SHOWN = ["denoiser", "budget_nfe", "method", "nfe", "eta", "horizon", "n_best", "passes", "reward_mean",
         "topic_share", "target_topic_share", "topic_kl", "tilted_nll", "target_nll_floor", "entropy", "samples_per_s"]


def _rows(csv_path: str | Path) -> pd.DataFrame:
    df = pd.read_csv(csv_path)
    return df.sort_values(["denoiser", "budget_nfe", "method", "eta", "horizon"], na_position="first")[SHOWN]


def summary(csv_path: str | Path) -> str:
    return f"{csv_path}\n" + _rows(csv_path).to_string(index=False, float_format=lambda v: f"{v:.3g}")


def write_table(csv_path: str | Path) -> Path:
    """table.md beside the leaderboard: the same rows as a markdown table a person reads."""
    out = Path(csv_path).parent / "table.md"
    out.write_text(_rows(csv_path).to_markdown(index=False, floatfmt=".3g") + "\n")
    return out
