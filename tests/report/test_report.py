"""The report: every promised PNG from a smoke leaderboard, one row per configuration with the
CSV's values, a low-temperature generator ranked below true data, and older leaderboards."""
import csv
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from flowbench.__main__ import main
from flowbench.report import load, write_report
from flowbench.runner import run_suite

ROOT = Path(__file__).parents[2]
SMOKE = yaml.safe_load((ROOT / "suites" / "smoke.yaml").read_text())


@pytest.fixture(scope="module")
def smoke_board(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    runs = [{"family": "ar_gpt2", "samplers": [{"sampler": "kv_cache", "temperature": [1.0, 0.3]}]},
            {"family": "dfm", "train": {"steps": [2, 4]}, "denoiser": ["trained", "oracle"],
             "samplers": [{"sampler": "euler", "nfe": [1, 2]}]},
            {"family": "kl_flow", "denoiser": ["oracle"],
             "samplers": [{"sampler": "hybrid", "nfe": [2], "t_star": [0.3, 0.6]},
                          {"sampler": "ode", "nfe": [2], "solver": ["euler", "midpoint"]}]}]
    suite = tmp / "suite.yaml"
    suite.write_text(yaml.safe_dump({**SMOKE, "runs": runs}))
    return run_suite(suite, out=tmp / "out", jobs=1, progress=False)


def test_report_writes_every_png_it_promises(smoke_board):
    assert main(["report", str(smoke_board.parent)]) == 0
    report = (smoke_board.parent / "report.md").read_text()
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", report)
    assert set(figures) >= {"gen_ppl_vs_nfe.png", "gen_ppl_vs_seconds.png", "gen_ppl_vs_entropy.png",
                            "mauve_vs_nfe.png", "bigram_kl_vs_nfe.png", "gen_ppl_vs_t_star.png",
                            "gen_ppl_vs_train_compute.png"}
    for name in figures:
        assert (smoke_board.parent / name).stat().st_size > 1000, name
    for section in ("## Gen PPL by NFE", "## MAUVE by NFE", "## Best per family", "## Ranking against true data"):
        assert section in report


def test_rows_differing_in_one_sampler_parameter_stay_apart(smoke_board):
    with open(smoke_board, newline="") as f:
        rows = list(csv.DictReader(f))
    df = load(smoke_board)
    assert len(df) == len(rows) and not df.duplicated(["run", "nfe"]).any()
    ar = df[df["family"] == "ar_gpt2"]
    # dfm trains at two budgets, so every trained row names its budget
    assert sorted(ar["run"]) == ["ar_gpt2/kv_cache passes=2", "ar_gpt2/kv_cache temperature=0.3 passes=2"]
    solvers = df[df["run"].str.contains("solver=")]
    assert solvers["run"].str.contains("solver=midpoint").sum() == 1
    by_key = {r["row_key"]: float(r["gen_ppl"]) for r in rows}
    assert all(by_key[k] == v for k, v in zip(df["row_key"], df["gen_ppl"]))
    pivot = write_report(smoke_board).read_text().split("## Gen PPL by NFE")[1].split("##")[0]
    for run, g in df.groupby("run"):
        line = next(l for l in pivot.splitlines() if l.startswith(f"| {run} "))
        for value in g["gen_ppl"]:
            assert f" {round(value, 3):g} " in line  # tabulate's default format of the rounded CSV value


def test_a_low_temperature_generator_ranks_below_true_data(tmp_path, markdown_table):
    """A cooled copy of the language beats true data on gen PPL and loses on the bigram KL."""
    import torch

    from flowbench.config import EvalConfig
    from flowbench.data.language import HMMLanguage
    from flowbench.judges import ExactJudge
    from flowbench.metrics import score_samples

    language = HMMLanguage(seq_len=32, seed=0)
    emit = language.emit ** (1 / 0.3)
    cold = HMMLanguage.from_tables(language.topic_prior, language.init, language.trans,
                                   emit / emit.sum(-1, keepdim=True), words=language.words, seq_len=32)
    judge = ExactJudge(corpus=language, cache_dir=tmp_path, device=torch.device("cpu"))
    config = EvalConfig(metrics=["gen_ppl", "entropy", "ngram_kl"])
    rows = []
    for i, (name, tokens) in enumerate((("cold", cold.sample(256, generator=torch.Generator().manual_seed(0))),
                                        ("model", language.split("train", 256)))):
        row = score_samples(tokens, corpus=language, judge=judge, eval_config=config, seed=0)
        rows.append({**row, "suite": "frontier", "family": name, "denoiser": "trained", "sampler": "s", "nfe": 32,
                     "seed": 0, "judge": "exact", "git_sha": "x", "row_key": f"k{i}", "samples_per_s": 1.0,
                     "backbone_calls": 32, "train_passes": 1, "num_samples": 256})
    (tmp_path / "b").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "b" / "leaderboard.csv", index=False)
    report = write_report(tmp_path / "b").read_text()
    order = list(markdown_table(report, "## Ranking against true data")["run"])
    assert order.index("true data") < order.index("cold/s")
    assert rows[0]["gen_ppl"] < rows[0]["gen_ppl_floor"]  # what gen PPL alone would have ranked first


def test_report_and_merge_work_on_an_older_leaderboard(tmp_path, capsys):
    shutil.copy(ROOT / "tests" / "fixtures" / "nfe_sweep_one_seed.csv", tmp_path / "leaderboard.csv")
    assert main(["report", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "judge `exact`;" in text and "judge_ppl" not in text  # written before the column: none to name
    assert "MAUVE on `minilm` features" in text  # the features its MAUVE column was computed on
    every = text.split("## Every row")[1].split("##")[0]
    with open(tmp_path / "leaderboard.csv", newline="") as f:
        n = len(list(csv.DictReader(f)))
    assert sum(1 for l in every.splitlines() if l.startswith("| ") and not l.startswith("| run")) == n
    assert main(["leaderboard", str(tmp_path), str(ROOT / "results" / "reference" / "tstar_sweep"),
                 "--out", str(tmp_path / "all.csv")]) == 0
    merged = pd.read_csv(tmp_path / "all.csv")
    from flowbench.leaderboard import COLUMNS
    assert list(merged.columns[: len(COLUMNS)]) == COLUMNS
    assert set(merged["suite"]) == {"nfe_sweep", "tstar_sweep"}
    assert main(["report", str(tmp_path / "nothing")]) == 2
