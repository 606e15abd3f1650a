"""Ranking like with like: rows rank within their own sample count on the excess over true
data's value at that N, overlapping intervals tie, and a row under true data's band is flagged."""
import numpy as np
import pandas as pd
import pytest
import torch

from flowbench.config import EvalConfig
from flowbench.data.language import HMMLanguage
from flowbench.judges import ExactJudge
from flowbench.metrics import score_samples
from flowbench.report import write_report


@pytest.fixture(scope="module")
def language():
    return HMMLanguage(seq_len=16, seed=0)


def board(tmp_path, language, named_tokens) -> str:
    """report.md of a leaderboard holding one row per (name, tokens), scored as a run would."""
    judge = ExactJudge(corpus=language, cache_dir=tmp_path, device=torch.device("cpu"))
    config = EvalConfig(metrics=["gen_ppl", "entropy", "ngram_kl"])
    rows = []
    for i, (name, tokens) in enumerate(named_tokens):
        row = score_samples(tokens, corpus=language, judge=judge, eval_config=config, seed=0, cache_dir=tmp_path)
        rows.append({**row, "suite": "ranking", "family": name, "denoiser": "trained", "sampler": "s", "nfe": 16,
                     "seed": 0, "judge": "exact", "git_sha": "x", "row_key": f"k{i}", "samples_per_s": 1.0,
                     "backbone_calls": 16, "train_passes": 1, "num_samples": len(tokens)})
    out = tmp_path / "board"
    out.mkdir()
    pd.DataFrame(rows).to_csv(out / "leaderboard.csv", index=False)
    return write_report(out).read_text()


def test_true_data_at_two_sample_counts_ranks_as_a_tie(tmp_path, language, markdown_table):
    """The plug-in bigram KL of true data shrinks with N: sorted together, the 2048-sample copy
    would rank first. Within each N, on the excess over the floor, each copy ties true data."""
    held_out = language.split("validation", 2048)
    report = board(tmp_path, language, [("copy256", held_out[:256]), ("copy2048", held_out)])
    table = markdown_table(report, "## Ranking against true data")
    ranks = table.groupby(table["run"].str.split("/").str[0])["rank"].apply(set)
    assert ranks["copy256"] == ranks["copy2048"] == ranks["true data"] == {"=1"}  # one true-data line per N
    assert set(table["N"]) == {"256", "2048"}
    assert "rows rank only within their own N" in report


def test_a_row_under_the_floor_band_is_flagged(tmp_path, language, markdown_table):
    """Word frequencies matched to the language's unigram marginal, in random order: a unigram
    KL no finite sample of true data reaches (it cannot rank), and the report says so."""
    unigram, _ = language.ngram_marginals()
    n, L = 256, language.seq_len
    counts = np.floor(unigram.numpy() * n * L).astype(int)
    counts[np.argsort(-unigram.numpy())[: n * L - counts.sum()]] += 1  # largest marginals take the rest
    words = np.random.default_rng(0).permutation(np.repeat(np.arange(len(counts)), counts))
    matched = torch.from_numpy(words.reshape(n, L))
    report = board(tmp_path, language, [("matched", matched), ("copy", language.split("validation", n))])
    table = markdown_table(report, "## Ranking against true data").set_index("run")
    flags = table.get("below true data", pd.Series("", index=table.index))
    assert "unigram_kl" in flags["matched/s"]
    assert flags["copy/s"] == ""
    assert "1 lines lie under the 5% quantile" in report


def lines(**over) -> dict:
    row = {"suite": "s", "family": "f", "denoiser": "trained", "sampler": "euler", "nfe": 4, "seed": 0,
           "judge": "exact", "git_sha": "x", "samples_per_s": 1.0, "backbone_calls": 4, "train_passes": 10,
           "num_samples": 256, "gen_ppl": 30.0, "gen_ppl_lo": 28.0, "gen_ppl_hi": 32.0, "gen_ppl_floor": 18.0,
           "bigram_kl": 0.9, "bigram_kl_lo": 0.85, "bigram_kl_hi": 0.95, "bigram_kl_floor": 0.64,
           "bigram_kl_floor_lo": 0.6, "bigram_kl_floor_hi": 0.68, "entropy": 3.0, "sampler_params": "{}"}
    return {**row, **over}


def report_of(tmp_path, rows) -> str:
    out = tmp_path / "b"
    out.mkdir()
    pd.DataFrame([{**r, "row_key": f"k{i}"} for i, r in enumerate(rows)]).to_csv(out / "leaderboard.csv", index=False)
    return write_report(out).read_text()


def test_training_seeds_are_one_line_and_a_seed_that_fails_shows(tmp_path, markdown_table):
    # as the runner writes them: without eval.sample_seeds a row samples with its training seed
    rows = [lines(seed=0, sample_seed=0, gen_ppl=30.0), lines(seed=1, sample_seed=1, gen_ppl=34.0),
            lines(seed=2, sample_seed=2, gen_ppl=4000.0, gen_ppl_lo=3800.0, gen_ppl_hi=4200.0, bigram_kl=6.0,
                  bigram_kl_lo=5.9, bigram_kl_hi=6.1),
            lines(seed=0, sample_seed=0, temperature=0.5, gen_ppl=20.0)]  # another parameter: never merged
    report = report_of(tmp_path, rows)
    pivot = markdown_table(report, "## Gen PPL by NFE").set_index("run")
    assert pivot.loc["f/euler", "NFE 4"] == f"{round((30 + 34 + 4000) / 3, 3):g}"
    assert pivot.loc["f/euler temperature=0.5", "NFE 4"] == "20"
    seeds = markdown_table(report, "## Training seeds").set_index("run")
    assert list(seeds.index) == ["f/euler"]
    assert seeds.loc["f/euler", "learned"] == "2 of 3"
    assert seeds.loc["f/euler", "gen_ppl seed min-max"] == "30.000-4000.000"
    assert "seed 2: 4000" in seeds.loc["f/euler", "per seed (where they disagree)"]
    every = markdown_table(report, "## Every row")
    assert len(every) == 4  # every leaderboard row still listed on its own


def test_best_per_family_chooses_on_tuning_rows_and_prints_held_out(tmp_path, markdown_table):
    """Setting A wins on its tuning samples; B's held-out row happens to look better. The
    choice is A (made on tuning rows), and the row printed is A's held-out one."""
    a, b = '{"t_first": 0.6}', '{"t_first": 0.7}'
    rows = [lines(sampler_params=a, split="tuning", sample_seed=1, bigram_kl=0.70, bigram_kl_lo=0.68,
                  bigram_kl_hi=0.72),
            lines(sampler_params=a, split="held_out", sample_seed=2, bigram_kl=0.80),
            lines(sampler_params=b, split="tuning", sample_seed=1, bigram_kl=0.90),
            lines(sampler_params=b, split="held_out", sample_seed=2, bigram_kl=0.66)]
    report = report_of(tmp_path, rows)
    best = markdown_table(report, "## Best per family")
    assert list(best["run"]) == ["f/euler t_first=0.6 [held-out]"]
    assert best["bigram_kl"].iloc[0] == "0.8"
    assert best["chosen on"].iloc[0].startswith("tuning (bigram_kl 0.700)")
    assert best["tied with"].iloc[0] == "0"  # B's tuning interval lies wholly above A's
    assert "[tuning]" in report and "[held-out]" in report


def test_an_unknown_split_fails_in_one_line(tmp_path, capsys):
    from flowbench.__main__ import main

    out = tmp_path / "b"
    out.mkdir()
    pd.DataFrame([{**lines(split="tune"), "row_key": "k0"}]).to_csv(out / "leaderboard.csv", index=False)
    assert main(["report", str(out)]) == 2
    assert "column 'split': unknown value 'tune'" in capsys.readouterr().err


def test_best_per_family_says_how_many_lines_it_was_chosen_among_within_noise(tmp_path, markdown_table):
    # three NFEs at the metric's bottom (as MAUVE on real English for a family far from the text):
    # the pick is the noise maximum and says it ties with the two others, not with the separate one
    rows = [lines(nfe=n, bigram_kl=v, bigram_kl_lo=v - 0.2, bigram_kl_hi=v + 0.2)
            for n, v in ((4, 5.0), (8, 5.1), (16, 4.95))] + [lines(nfe=32, bigram_kl=1.0, bigram_kl_lo=0.9,
                                                                    bigram_kl_hi=1.1)]
    best = markdown_table(report_of(tmp_path, rows), "## Best per family")
    assert list(best["nfe"]) == ["32"] and best["tied with"].iloc[0] == "0"
    (tmp_path / "alone").mkdir()
    best = markdown_table(report_of(tmp_path / "alone", rows[:3]), "## Best per family")
    assert list(best["nfe"]) == ["16"] and best["tied with"].iloc[0] == "2"
