"""Ranking like with like: rows rank only against rows of their own sample count N, on the
ranking metric minus true data's mean value at that N (its excess over the floor, whose
true-data value is 0 at every N), and rows whose intervals overlap share a rank.

Why the excess and not a bias-corrected estimator: the plug-in bigram KL of N x 31 pairs over
256^2 cells is deep in the undersampled regime where the usual corrections (Miller-Madow's
(K - 1) / 2M) are far off, while the floor of flowbench/metrics/floors.py is the statistic's
own distribution on true data at exactly that N. The excess of a generator other than the
data still moves with N (its own plug-in bias differs), hence ranks within each N.

Rank of a row = 1 + the number of rows of its N whose interval lies wholly on the better side
of its own (a tie is a result: "=3" when several rows share rank 3). A row's interval is its
within-run bootstrap interval, widened to the min-max over training seeds where it has several;
the true-data line's is the 5-95% band of its draws.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from flowbench.metrics import SCORE_COLUMNS

# a generator cannot beat true data on these but by gaming them: a value under the band is flagged
FLAGGED = ("gen_ppl", "unigram_kl", "bigram_kl")
SHOWN = list(SCORE_COLUMNS)


def present(df: pd.DataFrame, columns: list[str]) -> list[str]:
    return [c for c in columns if c in df and df[c].notna().any()]


def ranking_metric(df: pd.DataFrame) -> tuple[str, bool]:
    """The column that ranks rows, and whether lower is better: the bigram KL to the exact
    marginals where the corpus has them, else MAUVE, else gen PPL."""
    if present(df, ["bigram_kl"]):
        return "bigram_kl", True
    if present(df, ["mauve"]):
        return "mauve", False
    return "gen_ppl", True


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(df[name], errors="coerce") if name in df else pd.Series(np.nan, index=df.index)


def excess(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """score = metric - <metric>_floor (the metric itself where no row records a floor) and the
    row's interval on the same scale (bootstrap interval widened to the seed range)."""
    value, floor = _col(df, metric), _col(df, f"{metric}_floor")
    if floor.isna().all():
        floor = pd.Series(0.0, index=df.index)
    lo = pd.concat([_col(df, f"{metric}_lo"), _col(df, f"{metric}_seed_lo"), value], axis=1).min(axis=1)
    hi = pd.concat([_col(df, f"{metric}_hi"), _col(df, f"{metric}_seed_hi"), value], axis=1).max(axis=1)
    return pd.DataFrame({"score": value - floor, "score_lo": lo - floor, "score_hi": hi - floor})


def true_lines(df: pd.DataFrame) -> pd.DataFrame:
    """One 'true data' line per N: each metric at its floor, its interval the floor's band."""
    rows = []
    for n, g in df.groupby("num_samples", dropna=False):
        row = {"run": "true data", "num_samples": n, "family": "true data", "denoiser": "true data"}
        for c in SHOWN:
            floor = _col(g, f"{c}_floor").dropna()
            row[c] = floor.iloc[0] if len(floor) else np.nan
            for end in ("lo", "hi"):
                band = _col(g, f"{c}_floor_{end}").dropna()
                row[f"{c}_{end}"] = band.iloc[0] if len(band) else row[c]
            row[f"{c}_floor"] = row[c]
        rows.append(row)
    return pd.DataFrame(rows)


def tied_ranks(score: pd.Series, lo: pd.Series, hi: pd.Series, *, lower: bool) -> pd.Series:
    """'1', '=2', ... : 1 + the rows whose interval lies wholly on the better side; '=' where a
    rank is shared; empty where the score is missing."""
    ok = score.notna().to_numpy()
    lo_, hi_ = lo.to_numpy(float), hi.to_numpy(float)
    better = hi_[None, :] < lo_[:, None] if lower else lo_[None, :] > hi_[:, None]  # [i, j]: j beats i
    better &= ok[None, :]
    rank = pd.Series(np.where(ok, 1 + better.sum(1), 0), index=score.index)
    shared = rank.map(rank[ok].value_counts()).fillna(0) > 1
    text = rank.astype(str).where(~shared, "=" + rank.astype(str))
    return text.where(ok, "")


def rank_key(ranks: pd.Series) -> pd.Series:
    return pd.to_numeric(ranks.str.lstrip("="), errors="coerce")


def below_band(df: pd.DataFrame) -> pd.Series:
    """The FLAGGED columns of each row that lie under true data's 5% quantile at its N."""
    flags = pd.Series("", index=df.index)
    for c in FLAGGED:
        under = _col(df, c) < _col(df, f"{c}_floor_lo")
        flags = flags.where(~under, flags + np.where(flags == "", "", ", ") + c)
    return flags


def ranked(lines: pd.DataFrame) -> tuple[str, bool, pd.DataFrame]:
    """Every line and one true-data line per N, ranked within N (see the module docstring)."""
    metric, lower = ranking_metric(lines)
    table = pd.concat([lines, true_lines(lines)], ignore_index=True)
    table = pd.concat([table, excess(table, metric)], axis=1)
    table["below true data"] = below_band(table)
    table["rank"] = ""
    for _, g in table.groupby("num_samples", dropna=False):
        table.loc[g.index, "rank"] = tied_ranks(g["score"], g["score_lo"], g["score_hi"], lower=lower)
    table["_order"] = rank_key(table["rank"])
    table = table.sort_values(["num_samples", "_order", "score"], ascending=[True, True, lower],
                              na_position="last")
    return metric, lower, table.drop(columns="_order").reset_index(drop=True)


def best_per_family(lines: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """Per N, family and denoiser, the line with the best excess. Where the family has tuning
    lines the choice is made on them alone and the held-out line of the chosen setting is
    shown (`chosen on`); without a held-out twin the tuning line is shown and says so.
    `tied with`: how many other lines it was chosen among have an interval that overlaps its own."""
    metric, lower = ranking_metric(lines)
    scored = pd.concat([lines, excess(lines, metric)], axis=1)
    scored = scored[scored["score"].notna()]
    split = scored["split"]
    picks = []
    for _, g in scored.groupby(["num_samples", "family", "denoiser"], dropna=False):
        tuning = g[split[g.index] == "tuning"]
        pool = tuning if len(tuning) else g
        best = pool.loc[pool["score"].idxmin() if lower else pool["score"].idxmax()]
        # the pool's other lines whose interval overlaps the pick's: a choice among them is noise
        tied = int(((pool["score_hi"] >= best["score_lo"]) & (pool["score_lo"] <= best["score_hi"])).sum()) - 1
        if not len(tuning):
            picks.append({**best.to_dict(), "chosen on": "", "tied with": tied})
            continue
        twin = g[(split[g.index] == "held_out") & (g["setting"] == best["setting"]) & (g["nfe"] == best["nfe"])]
        note = f"tuning ({metric} {best[metric]:.3f})"
        picks.append({**(twin.iloc[0] if len(twin) else best).to_dict(),
                      "chosen on": note if len(twin) else note + "; no held-out row", "tied with": tied})
    best = pd.DataFrame(picks)
    if best.empty:
        return metric, best
    return metric, best.sort_values(["num_samples", "score"], ascending=[True, lower])
