"""The tables of report.md: pivots over NFE, the best row of every family, a ranking against
true data, and the full table with intervals. Every leaderboard row appears under its own
label (flowbench/report/labels.py); nothing is averaged."""
from __future__ import annotations

import pandas as pd

from flowbench.report.labels import first

SUMMARY = ["gen_ppl", "gen_ppl_lo", "gen_ppl_hi", "entropy", "mauve", "mauve_lo", "mauve_hi",
           "unigram_kl", "bigram_kl", "bigram_kl_lo", "bigram_kl_hi", "seconds_per_sample", "backbone_calls"]


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


def pivot(df: pd.DataFrame, value: str) -> str:
    """Rows: family and sampler (trained and oracle, each run its own row); columns: NFE."""
    table = df.pivot(index="run", columns="nfe", values=value).sort_index()
    table.columns = [f"NFE {int(c)}" for c in table.columns]
    return table.round(3).to_markdown()


def true_data_row(df: pd.DataFrame) -> dict:
    """The floors recorded on the rows: what true data of the same size scores."""
    return {"run": "true data", "gen_ppl": first(df, "gen_ppl_floor") or first(df, "ppl_floor"),
            "entropy": first(df, "entropy_floor"), "mauve": first(df, "mauve_floor"),
            "unigram_kl": first(df, "unigram_kl_floor"), "bigram_kl": first(df, "bigram_kl_floor")}


def best_per_family(df: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    metric, lower = ranking_metric(df)
    rows = df[df[metric].notna()]
    pick = rows.groupby(["family", "denoiser"])[metric].idxmin() if lower else \
        rows.groupby(["family", "denoiser"])[metric].idxmax()
    best = rows.loc[pick.values, ["family", "denoiser", "run", "nfe", *present(rows, SUMMARY)]]
    return metric, best.sort_values(metric, ascending=lower)


def ranking(df: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """Every row and the true-data row, ordered by the ranking metric."""
    metric, lower = ranking_metric(df)
    cols = ["run", "nfe", *present(df, ["gen_ppl", "entropy", "mauve", "unigram_kl", "bigram_kl"])]
    table = pd.concat([df[cols], pd.DataFrame([true_data_row(df)])[[c for c in cols if c != "nfe"]]],
                      ignore_index=True)
    table = table.sort_values(metric, ascending=lower, na_position="last").reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return metric, table


def markdown(df: pd.DataFrame, figures: list[str]) -> str:
    metric, lower = ranking_metric(df)
    floor = true_data_row(df)
    head = [f"# {', '.join(sorted(df['suite'].astype(str).unique()))}", "",
            f"{len(df)} rows; judge `{', '.join(sorted(df['judge'].astype(str).unique()))}`"
            + "".join(f"; true data {k} {v:.3f}" for k, v in floor.items() if k != "run" and v is not None)
            + f"; git {', '.join(sorted(df['git_sha'].astype(str).unique()))}.", "",
            f"Rows are ranked by `{metric}` ({'lower' if lower else 'higher'} is better): gen PPL alone "
            "rewards collapsed, low-entropy samplers (see docs/metrics.md).", ""]
    out = head + ["## Gen PPL by NFE", "", pivot(df, "gen_ppl"), ""]
    for col, title in (("mauve", "MAUVE by NFE"), ("bigram_kl", "Bigram KL to the exact marginals by NFE")):
        if present(df, [col]):
            out += [f"## {title}", "", pivot(df, col), ""]
    _, best = best_per_family(df)
    out += ["## Best per family", "", f"The row of each family and denoiser with the best `{metric}`.", "",
            best.round(3).to_markdown(index=False), ""]
    _, ranked = ranking(df)
    out += ["## Ranking against true data", "", ranked.round(3).to_markdown(index=False), ""]
    full = ["run", "nfe", *present(df, ["gen_ppl", "gen_ppl_lo", "gen_ppl_hi", "gen_ppl_mean", "nll_median",
                                         "entropy", "entropy_lo", "entropy_hi", "mauve", "mauve_lo", "mauve_hi",
                                         "unigram_kl", "unigram_kl_lo", "unigram_kl_hi", "bigram_kl",
                                         "bigram_kl_lo", "bigram_kl_hi", "samples_per_s", "backbone_calls"])]
    out += ["## Every row", "", df[full].sort_values(["run", "nfe"]).round(3).to_markdown(index=False), ""]
    if figures:
        out += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(out)
