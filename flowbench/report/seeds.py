"""Rows that differ only in training seed, shown as one line: the mean over seeds, the seed
interval (min-max over seeds), the within-run bootstrap interval (its bounds averaged over
seeds), whether each seed's model learned, and the per-seed values where the seeds disagree.

Rows that differ in anything else (a sampler or family parameter, the sample count, the
sampling seed, the split, the judge, the device...) are never merged: the group key is every
such column, not the label alone. A row sampled without `eval.sample_seeds` draws its samples
with its training seed (labels.py `sampling_seed` is empty there): its seed group varies the two
together, as one training run and its samples are one draw of the whole experiment.

A model "learned" when the best gen PPL over every row it sampled is under LEARNED_FACTOR times
true data's at the same N (the exact judge's word-frequency level, a model that never turned,
sits two to three orders of magnitude above true data; NFE 1 of every family does too, so a
single row cannot tell). An oracle denoiser has nothing to learn.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from flowbench.leaderboard import SWEEP_COLUMNS
from flowbench.metrics import SCORE_COLUMNS

LEARNED_FACTOR = 10.0
# everything that tells two configurations apart; the training seed is the one axis left out
IDENTITY = ["suite", "corpus", "family", "family_params", "denoiser", "sampler", "sampler_params", "nfe",
            *SWEEP_COLUMNS, "train_steps", "train_passes", "num_samples", "judge", "precision", "compiled",
            "device", "sampling_seed", "split", "mauve_features", "mauve_scaling", "mauve_seed", "line"]
# what one trained model is: its rows share its weights (its samplers and NFEs vary)
MODEL = ["suite", "corpus", "family", "family_params", "denoiser", "train_steps", "train_passes", "precision",
         "device", "seed"]


def learned(df: pd.DataFrame) -> pd.Series:
    """Per row: True where its model learned, False where not, NaN where gen PPL or its floor
    is missing; oracle rows True."""
    cols = [c for c in MODEL if c in df]
    ratio = pd.to_numeric(df["gen_ppl"], errors="coerce") / pd.to_numeric(df["gen_ppl_floor"], errors="coerce")
    best = ratio.groupby([df[c].astype(str) for c in cols], dropna=False).transform("min")
    out = (best < LEARNED_FACTOR).astype(object).where(best.notna(), np.nan)
    out[df["denoiser"] == "oracle"] = True
    return out


def collapse(df: pd.DataFrame) -> pd.DataFrame:
    """One line per group of rows that differ only in training seed: numeric columns are the
    mean over seeds, `<col>_seed_lo/_hi` the min and max over seeds, `seeds` how many,
    `learned` how many of them learned, `per_seed` the per-seed values of gen PPL (and of
    the ranking metric) where the seeds disagree. A group of one row is that row."""
    df = df.assign(learned=learned(df)).sort_values("seed", kind="stable")
    keys = [c for c in IDENTITY if c in df]
    grouped = df.groupby([df[c].astype(str) for c in keys], sort=False, dropna=False)
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and c not in keys and c != "seed"]
    first = [c for c in df.columns if c not in numeric and c not in ("seed", "learned")]
    out = grouped[first].first()
    out[numeric] = grouped[numeric].mean()
    out["seeds"] = grouped["seed"].size()
    out["learned"] = grouped["learned"].apply(lambda s: int(s.dropna().astype(bool).sum()) if s.notna().any()
                                              else np.nan)
    spread = [c for c in SCORE_COLUMNS if c in df]  # the columns given a seed interval
    out[[f"{c}_seed_lo" for c in spread]] = grouped[spread].min().to_numpy()
    out[[f"{c}_seed_hi" for c in spread]] = grouped[spread].max().to_numpy()
    out["seed"] = grouped["seed"].apply(lambda s: " ".join(f"{v:g}" for v in s.dropna()))
    out["per_seed"] = grouped[list(df.columns)].apply(_per_seed)
    out["run"] = out["line"]
    return out.reset_index(drop=True)


def _per_seed(g: pd.DataFrame) -> str:
    """'seed 0: 27.5, seed 1: 4225' where the seeds disagree (within-run intervals that do not
    all overlap, or some seeds learned and others not); else empty."""
    if len(g) < 2:
        return ""
    flags = g["learned"].dropna().astype(bool)
    split_learning = 0 < flags.sum() < len(flags)
    apart = bool(g["gen_ppl_lo"].max() > g["gen_ppl_hi"].min()) if g["gen_ppl_lo"].notna().all() else False
    if not (split_learning or apart):
        return ""
    return ", ".join(f"seed {s:g}: {v:.4g}" for s, v in zip(g["seed"], g["gen_ppl"]))
