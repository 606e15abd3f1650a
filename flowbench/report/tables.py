"""The tables of report.md: true data at each sample count, pivots over NFE, the training-seed
spread, the best row of every family, a ranking against true data within each N, the rows
under true data's band, and every leaderboard row with its intervals. Rows that differ only in
training seed are one line (flowbench/report/seeds.py); nothing else is merged."""
from __future__ import annotations

import pandas as pd

from flowbench.report.ranking import FLAGGED, SHOWN, best_per_family, present, ranked, ranking_metric, true_lines
from flowbench.report.seeds import LEARNED_FACTOR, collapse

SUMMARY = ["gen_ppl", "gen_ppl_lo", "gen_ppl_hi", "entropy", "mauve", "mauve_lo", "mauve_hi",
           "unigram_kl", "bigram_kl", "bigram_kl_lo", "bigram_kl_hi", "seconds_per_sample", "backbone_calls"]
EVERY = ["gen_ppl", "gen_ppl_lo", "gen_ppl_hi", "gen_ppl_mean", "nll_median", "entropy", "entropy_lo", "entropy_hi",
         "mauve", "mauve_lo", "mauve_hi", "unigram_kl", "unigram_kl_lo", "unigram_kl_hi", "bigram_kl",
         "bigram_kl_lo", "bigram_kl_hi", "samples_per_s", "backbone_calls"]


def pivot(lines: pd.DataFrame, value: str) -> str:
    """Rows: family and sampler (trained and oracle, each run its own row); columns: NFE."""
    table = lines.pivot(index="run", columns="nfe", values=value).sort_index()
    table.columns = [f"NFE {int(c)}" for c in table.columns]
    return table.round(3).to_markdown()


def true_data_row(df: pd.DataFrame) -> dict:
    """The floors at the leaderboard's usual N (the dotted line of the figures)."""
    usual = df["num_samples"].mode()
    truth = true_lines(df[df["num_samples"] == usual.iloc[0]] if len(usual) else df)
    row = truth.iloc[0].to_dict() if len(truth) else {}
    return {"run": "true data", **{c: (None if pd.isna(row.get(c)) else row.get(c)) for c in SHOWN}}


def judges(df: pd.DataFrame) -> str:
    """The judges of the rows, each with its own held-out perplexity (`judge_ppl`) where it has one."""
    ppl = pd.to_numeric(df["judge_ppl"], errors="coerce") if "judge_ppl" in df else pd.Series(float("nan"), df.index)
    out = []
    for name, g in ppl.groupby(df["judge"].astype(str)):
        values = sorted(g.dropna().round(2).unique())
        out.append(f"`{name}`" + (f" (its held-out perplexity {', '.join(f'{v:.2f}' for v in values)})" if values else ""))
    return ", ".join(out)


def mauve_features(df: pd.DataFrame) -> str:
    """' MAUVE on `<features>` features.' for the features the rows' MAUVE was computed on, if any."""
    kinds = sorted(df["mauve_features"].dropna().astype(str).unique()) if "mauve_features" in df else []
    return f" MAUVE on {', '.join(f'`{k}`' for k in kinds)} features (docs/metrics.md)." if kinds else ""


def _n(n) -> str:
    return "?" if pd.isna(n) else f"{n:g}"


def _band(value, lo, hi) -> str:
    if pd.isna(value):
        return ""
    return f"{value:.3f}" if pd.isna(lo) or lo == hi else f"{value:.3f} ({lo:.3f}-{hi:.3f})"


def truth_table(df: pd.DataFrame) -> str:
    truth = true_lines(df)
    cols = present(truth, SHOWN)
    table = pd.DataFrame({"N": truth["num_samples"].map(_n),
                          **{c: [_band(r[c], r[f"{c}_lo"], r[f"{c}_hi"]) for _, r in truth.iterrows()] for c in cols}})
    return table.to_markdown(index=False)


def seed_table(lines: pd.DataFrame, metric: str) -> str:
    many = lines[lines["seeds"] > 1]
    rows = []
    for _, r in many.iterrows():
        row = {"run": r["run"], "nfe": r["nfe"], "seeds": f"{r['seed']}",
               "learned": "" if pd.isna(r["learned"]) else f"{int(r['learned'])} of {int(r['seeds'])}"}
        for c in dict.fromkeys(["gen_ppl", metric]):
            row[f"{c} mean"] = round(r[c], 3)
            row[f"{c} seed min-max"] = f"{r[f'{c}_seed_lo']:.3f}-{r[f'{c}_seed_hi']:.3f}"
            half = (r.get(f"{c}_hi") - r.get(f"{c}_lo")) / 2
            row[f"{c} within-run"] = "" if pd.isna(half) else f"± {half:.3g}"
        row["per seed (where they disagree)"] = r["per_seed"]
        rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False)


def under_table(under: pd.DataFrame) -> str:
    """Each flagged line with its value and true data's band on every flagged column."""
    rows = [{"N": _n(r["num_samples"]), "run": r["run"], "nfe": r["nfe"],
             **{c: (f"{r[c]:.4g} under {r[f'{c}_floor_lo']:.4g}-{r[f'{c}_floor_hi']:.4g}"
                    if c in r["below true data"].split(", ") else "") for c in FLAGGED}}
            for _, r in under.iterrows()]
    return pd.DataFrame(rows).to_markdown(index=False)


def markdown(df: pd.DataFrame, figures: list[str]) -> str:
    lines = collapse(df)
    metric, lower, table = ranked(lines)
    counts = df["num_samples"].value_counts(dropna=False).sort_index()
    head = [f"# {', '.join(sorted(df['suite'].astype(str).unique()))}", "",
            f"{len(df)} rows ({', '.join(f'{c} at N = {_n(n)}' for n, c in counts.items())}); judge "
            f"{judges(df)}; git "
            f"{', '.join(sorted(df['git_sha'].astype(str).unique()))}.{mauve_features(df)}", "",
            "True data at each sample count N: the mean over draws of held-out sequences, with the 5-95% band "
            "of the draws where the leaderboard records it (docs/metrics.md).", "", truth_table(df), "",
            f"Rows are ranked by `{metric}` minus true data's `{metric}` at the row's own N "
            f"({'lower' if lower else 'higher'} is better), within each N; rows whose intervals overlap share a "
            "rank (`=k`). Gen PPL alone rewards collapsed, low-entropy samplers and the unigram KL rewards "
            "independent word draws: they describe rows, they do not rank them (docs/metrics.md).", ""]
    if len(counts) > 1:
        head += [f"This leaderboard holds rows at {len(counts)} sample counts ({', '.join(_n(n) for n in counts.index)}): "
                 "a plug-in statistic's true-data value moves with N, so rows rank only within their own N.", ""]
    if (lines["seeds"] > 1).any():
        head += [f"Rows that differ only in training seed are one line: the mean over seeds (pivots, best, "
                 "ranking), see \"Training seeds\".", ""]
    if lines["split"].eq("tuning").any():
        head += ["Lines marked [tuning] chose the sampler settings; [held-out] lines use sampling seeds never "
                 "used to choose.", ""]
    out = head + ["## Gen PPL by NFE", "", pivot(lines, "gen_ppl"), ""]
    for col, title in (("mauve", "MAUVE by NFE"), ("bigram_kl", "Bigram KL to the exact marginals by NFE")):
        if present(lines, [col]):
            out += [f"## {title}", "", pivot(lines, col), ""]
    if (lines["seeds"] > 1).any():
        out += ["## Training seeds", "",
                "Mean over training seeds, the seed interval (min-max over seeds) and the within-run bootstrap "
                f"interval (95%, its half-width averaged over seeds). A seed learned when its model's best gen PPL "
                f"over NFE is under {LEARNED_FACTOR:g} x true data's.", "", seed_table(lines, metric), ""]
    _, best = best_per_family(lines)
    cols = ["num_samples", "family", "denoiser", "run", "nfe", *present(best, SUMMARY), "score", "tied with",
            "chosen on"]
    out += ["## Best per family", "",
            f"Per N, the line of each family and denoiser with the best `{metric}` over true data's at that N "
            "(`score`); where tuning lines exist the choice is made on them and the held-out line is shown. "
            "`tied with`: how many of the family's other lines have an interval overlapping the chosen one's "
            "(where it is most of them, the choice is within noise: read gen PPL and entropy beside it).", "",
            best.reindex(columns=[c for c in cols if c in best and (c != "chosen on" or best[c].ne("").any())])
            .rename(columns={"num_samples": "N"}).round(3).to_markdown(index=False), ""]
    cols = ["num_samples", "rank", "run", "nfe", *present(table, SHOWN), "score", "score_lo", "score_hi",
            *(["below true data"] if table["below true data"].ne("").any() else [])]
    shown = table.reindex(columns=cols).rename(columns={"num_samples": "N", "score": f"{metric} - true",
                                                        "score_lo": "lo", "score_hi": "hi"})
    out += ["## Ranking against true data", "", shown.round(3).to_markdown(index=False), ""]
    under = table[table["below true data"] != ""]
    if present(table, [f"{c}_floor_lo" for c in SHOWN]):
        out += ["## Below true data's band", "",
                f"{len(under)} lines lie under the 5% quantile of true data at their N on gen PPL or a KL "
                "(a generator equal to the data does so in about 5% of rows; far more means a gamed statistic, "
                "e.g. independent word draws on the unigram KL).", ""]
        if len(under):
            out += [under_table(under), ""]
    else:
        out += ["## Below true data's band", "", "The leaderboard records no floor bands (rows from before "
                "`<col>_floor_lo`): nothing is flagged.", ""]
    full = ["run", "nfe", *present(df, EVERY)]
    out += ["## Every row", "", df[full].sort_values(["run", "nfe"]).round(3).to_markdown(index=False), ""]
    if figures:
        out += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(out)
