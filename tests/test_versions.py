"""A family's version is in its keys: bumping it retrains that family only and supersedes its rows."""
import csv
from pathlib import Path

import yaml

from flowbench.compare import compare
from flowbench.leaderboard import COLUMNS, Leaderboard
from flowbench.registry import FAMILIES
from flowbench.report import load
from flowbench.runner import run_suite

SMOKE = yaml.safe_load((Path(__file__).parents[1] / "suites" / "smoke.yaml").read_text())
RUNS = [{"family": "mdlm", "denoiser": ["trained", "oracle"], "samplers": [{"sampler": "ancestral", "nfe": 2}]},
        {"family": "dfm", "samplers": [{"sampler": "euler", "nfe": 2}]}]


def rows(csv_path):
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def test_bumping_a_family_version_retrains_that_family_only(tmp_path, monkeypatch, capsys):
    suite = tmp_path / "versions.yaml"
    suite.write_text(yaml.safe_dump({**SMOKE, "name": "versions", "runs": RUNS}))
    out = tmp_path / "out"
    csv_path = run_suite(suite, out=out, jobs=1, progress=False)
    first = rows(csv_path)
    models = tmp_path / "cache" / "models"
    before = {p.name: p.stat().st_mtime_ns for p in models.glob("*.pt")}
    assert sorted(n.split("-")[0] for n in before) == ["dfm", "mdlm"]

    monkeypatch.setattr(FAMILIES.get("mdlm"), "version", 2)
    capsys.readouterr()
    run_suite(suite, out=out, jobs=1, progress=False)
    said = capsys.readouterr().out
    assert "2 rows of family mdlm were computed with version 1; recomputing with version 2" in said
    # the progress line counts what is left; one line says what the folder already holds
    assert "1 of 3 rows already in" in said and "1 of 2 trained models with all their rows; 2 rows to go" in said
    after = {p.name: p.stat().st_mtime_ns for p in models.glob("*.pt")}
    new = set(after) - set(before)
    assert len(new) == 1 and new.pop().startswith("mdlm-")  # one new mdlm model
    assert all(after[name] == mtime for name, mtime in before.items())  # dfm (and old mdlm) untouched

    second = rows(csv_path)
    added = second[len(first):]
    old_mdlm = {r["row_key"] for r in first if r["family"] == "mdlm"}
    assert second[:len(first)] == first  # the old rows stay
    assert sorted(r["family"] for r in added) == ["mdlm", "mdlm"]
    assert {r["supersedes"] for r in added} == old_mdlm
    assert all('"family": 2' in r["versions"] for r in added)
    report_keys = set(load(csv_path)["row_key"])  # the report keeps the newest version only
    assert report_keys == {r["row_key"] for r in added} | {r["row_key"] for r in first if r["family"] == "dfm"}
    assert len(compare(csv_path, csv_path).pairs) == 3

    capsys.readouterr()
    run_suite(suite, out=out, jobs=1, progress=False)
    assert "all 3 rows already in" in capsys.readouterr().out  # nothing left to recompute


def test_a_leaderboard_written_before_new_columns_is_upgraded_not_shifted(tmp_path):
    old_columns = [c for c in COLUMNS if c not in ("versions", "supersedes")]
    path = tmp_path / "leaderboard.csv"
    path.write_text(",".join(old_columns) + "\n" + ",".join("old" if c == "row_key" else "" for c in old_columns) + "\n")
    Leaderboard(tmp_path).append({"row_key": "new", "supersedes": "old", "family": "mdlm"})
    assert [(r["row_key"], r["supersedes"], r["family"]) for r in rows(path)] == [("old", "", ""), ("new", "old", "mdlm")]


def test_rows_a_queue_still_holds_are_neither_on_the_board_nor_to_go(tmp_path, monkeypatch, capsys):
    import flowbench.runner as runner

    real = runner.make_launcher

    def launcher_with_one_row_queued(*args, **kwargs):
        launcher = real(*args, **kwargs)
        # an earlier submission still holds the first row in its queue (a slurm launcher's squeue)
        launcher.not_in_flight = lambda points, key_of: points[1:]
        return launcher

    monkeypatch.setattr(runner, "make_launcher", launcher_with_one_row_queued)
    suite = tmp_path / "queued.yaml"
    suite.write_text(yaml.safe_dump({**SMOKE, "name": "queued", "runs": RUNS}))
    csv_path = run_suite(suite, out=tmp_path / "out", jobs=1, progress=False)
    said = capsys.readouterr().out
    assert "0 of 3 rows already in" in said and "0 of 2 trained models with all their rows, 1 queued; 2 rows to go" in said
    assert len(rows(csv_path)) == 2  # the queued row is not submitted again
