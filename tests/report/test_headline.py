"""The README's headline table is generated from the committed reference, not typed."""
import shutil
from pathlib import Path

import pandas as pd
import pytest

from flowbench.report.headline import README_END, README_START, headline_table, readme_block, write_readme
from flowbench.report.labels import label

ROOT = Path(__file__).parents[2]
REFERENCE = ROOT / "results" / "reference" / "nfe_sweep"


def _cells(table: str) -> pd.DataFrame:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table.splitlines()]
    return pd.DataFrame(rows[2:], columns=rows[0]).set_index(rows[0][0])


def _reference() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "leaderboard.csv", dtype={"row_key": str, "supersedes": str})


def test_the_readme_table_is_what_the_generator_writes(monkeypatch):
    monkeypatch.chdir(ROOT)
    text = (ROOT / "README.md").read_text()
    assert text.count(README_START) == 1 and text.count(README_END) == 1
    shown = text.split(README_START)[1].split(README_END)[0].strip("\n")
    assert shown == readme_block("results/reference/nfe_sweep")


def test_the_stale_note_follows_the_stale_file(tmp_path):
    shutil.copy(REFERENCE / "leaderboard.csv", tmp_path / "leaderboard.csv")
    assert "numbers are stale" not in readme_block(tmp_path)
    (tmp_path / "STALE").write_text("keys changed; recompute\n")
    assert "keys changed; recompute" in readme_block(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{README_START}\nold table\n{README_END}\n\nafter\n")
    write_readme(tmp_path, readme)
    out = readme.read_text()
    assert "old table" not in out and "keys changed; recompute" in out and out.endswith(f"{README_END}\n\nafter\n")


def test_default_samplers_only_trained_and_at_the_usual_sample_count():
    table = _cells(headline_table(label(_reference())))
    ref = _reference()
    mdlm = ref[(ref["family"] == "mdlm") & (ref["sampler"] == "ancestral") & (ref["denoiser"] == "trained")
               & (ref["nfe"] == 64) & (ref["num_samples"] == 256)]
    assert len(mdlm) >= 1 and table.loc["mdlm/ancestral", "NFE 64"] == f"{mdlm['gen_ppl'].mean():.1f}"  # mean over seeds
    assert not any("t_first" in line or "oracle" in line or "samples=" in line for line in table.index)
    assert "flow_map/consistency" in table.index  # its defaults: t_first 0.6, argmax reads


def test_mean_over_training_seeds_and_no_tuning_rows():
    # a one-seed board (nfe_sweep before its three-seed recomputation), given a second seed here
    ref = pd.read_csv(ROOT / "tests" / "fixtures" / "nfe_sweep_one_seed.csv", dtype={"row_key": str, "supersedes": str})
    mdlm = (ref["family"] == "mdlm") & (ref["sampler"] == "ancestral") & (ref["num_samples"] == 256)
    seed1 = ref[mdlm].assign(seed=1, gen_ppl=ref.loc[mdlm, "gen_ppl"] * 3,
                             row_key=ref.loc[mdlm, "row_key"] + "s1")
    tuning = ref[mdlm].assign(split="tuning", sample_seed=7, gen_ppl=1.0, row_key=ref.loc[mdlm, "row_key"] + "t")
    both = pd.concat([ref.assign(split=""), seed1.assign(split=""), tuning], ignore_index=True)
    table = _cells(headline_table(label(both)))
    nfe64 = ref[mdlm & (ref["denoiser"] == "trained") & (ref["nfe"] == 64)]["gen_ppl"].iloc[0]
    assert table.loc["mdlm/ancestral", "NFE 64"] == f"{2 * nfe64:.1f}"  # mean of x and 3x
    assert table.loc["mdlm/ancestral", "seeds learned"] == "2 of 2"
    assert not any("tuning" in line for line in table.index)


def test_no_default_row_is_one_line_error(tmp_path):
    ref = _reference()
    ref = ref[ref["denoiser"] == "oracle"]
    ref.to_csv(tmp_path / "leaderboard.csv", index=False)
    with pytest.raises(ValueError, match="no trained row at default sampler settings"):
        readme_block(tmp_path)
