"""Reference results apart from a user's runs, and `compare` against them."""
import csv
import shutil
from pathlib import Path

import pytest

from flowbench.__main__ import main
from flowbench.compare import compare
from flowbench.config import load_suite
from flowbench.plan import plan

ROOT = Path(__file__).parents[1]
REFERENCE = ROOT / "results" / "reference" / "nfe_sweep" / "leaderboard.csv"
SMOKE = ROOT / "suites" / "smoke.yaml"


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_compare_flags_an_altered_gen_ppl_and_only_that(tmp_path, capsys):
    rows = read(REFERENCE)
    for r in rows:  # machine speed is reported, never a failure
        r["samples_per_s"] = str(2 * float(r["samples_per_s"]))
    write(tmp_path / "same" / "leaderboard.csv", rows)
    assert main(["compare", str(tmp_path / "same"), str(REFERENCE.parent)]) == 0
    assert "match" in capsys.readouterr().out

    altered = [dict(r) for r in rows]
    victim = altered[7]
    victim["gen_ppl"] = repr(float(victim["gen_ppl"]) * (1 + 1e-5))  # beyond rtol 1e-6
    write(tmp_path / "altered" / "leaderboard.csv", altered)
    assert main(["compare", str(tmp_path / "altered"), str(REFERENCE)]) == 1
    out = capsys.readouterr().out.splitlines()
    differs = [line for line in out if line.startswith("differs")]
    assert len(differs) == 1 and victim["row_key"] in differs[0] and "gen_ppl" in differs[0]
    assert "1 differ" in out[-1]
    assert main(["compare", str(tmp_path / "altered"), str(REFERENCE), "--rtol", "1e-4"]) == 0


def test_compare_reports_missing_rows_and_matches_moved_keys_by_configuration(tmp_path):
    rows = read(REFERENCE)
    moved = [dict(r) for r in rows[1:]]  # the first row is missing from the run
    moved[0]["row_key"] = "0" * 12  # the code changed the key, not the configuration
    write(tmp_path / "run" / "leaderboard.csv", moved)
    result = compare(tmp_path / "run", REFERENCE)
    assert not result.ok and not result.differ and not result.only_run
    assert [r["row_key"] for r in result.only_reference] == [rows[0]["row_key"]]
    assert [by for r, _, by in result.matched if r["row_key"] == "0" * 12] == ["configuration"]


def test_a_fresh_run_writes_its_own_results_and_reproduces_the_reference(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["--only", "family=mdlm", "--jobs", "1", "--no-progress"]
    assert main(["run", str(SMOKE), "--out", "results/reference/smoke", *args]) == 0
    reference = tmp_path / "results" / "reference" / "smoke" / "leaderboard.csv"
    before = reference.read_bytes()
    shutil.rmtree(tmp_path / "cache")  # a fresh machine: nothing trained, nothing cached
    capsys.readouterr()
    assert main(["run", str(SMOKE), *args]) == 0
    out = capsys.readouterr().out
    mine = tmp_path / "results" / "smoke" / "leaderboard.csv"
    expected = len(plan(load_suite(SMOKE), only={"family": "mdlm"}))
    assert len(read(mine)) == expected  # every row computed again, none taken from the reference
    assert reference.read_bytes() == before
    summary = [line for line in out.splitlines() if "results/reference/smoke" in line]
    assert summary and summary[0].startswith("match") and f"{expected} of {expected} matched rows agree" in summary[0]
