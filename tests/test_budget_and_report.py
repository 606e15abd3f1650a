"""Training budgets as sweep axes, the equal-compute budget, and a report that never merges rows."""
import csv
from pathlib import Path

import pytest
import yaml

from flowbench.config import SuiteError, TrainConfig, load_suite
from flowbench.plan import plan
from flowbench.registry import FAMILIES
from flowbench.report import load, write_report
from flowbench.runner import run_suite

SMOKE = yaml.safe_load((Path(__file__).parents[1] / "suites" / "smoke.yaml").read_text())


def suite_file(tmp_path, **changes) -> Path:
    data = {**SMOKE, **changes}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_step_costs_count_the_backbone_work():
    V, L = 8, 4
    flow_map = FAMILIES.get("flow_map")
    assert flow_map(params=flow_map.Params(distill_start=0.0), vocab_size=V, seq_len=L).train_cost == pytest.approx(8 / 3)
    # half the passes at 1 a step, half at 8/3: 1 / (1/2 + 3/16) passes a step on average
    assert flow_map(params=flow_map.Params(distill_start=0.5), vocab_size=V, seq_len=L).train_cost == pytest.approx(16 / 11)
    assert flow_map(params=flow_map.Params(distill="none"), vocab_size=V, seq_len=L).train_cost == 1.0
    mdlm = FAMILIES.get("mdlm")
    assert mdlm(params=mdlm.Params(), vocab_size=V, seq_len=L).train_cost == 1.0


def test_passes_budget_divides_by_the_declared_step_cost():
    config = TrainConfig(passes=300)
    assert config.total_steps(32, cost=1.0) == 300
    assert config.total_steps(32, cost=3.0) == 100
    assert TrainConfig(tokens=64 * 32 * 10).total_steps(32) == 10
    with pytest.raises(ValueError, match="exactly one budget"):
        TrainConfig(steps=3, passes=3)


def test_train_fields_are_sweep_axes(tmp_path):
    runs = [{"family": "mdlm", "train": {"steps": [2, 4]}, "samplers": [{"sampler": "ancestral", "nfe": [1, 2]}]},
            {"family": "flow_map", "params": {"distill_start": 0.0}, "samplers": [{"sampler": "flow_map", "nfe": 1}]}]
    suite = load_suite(suite_file(tmp_path, train={**SMOKE["train"], "steps": None, "passes": [8, 16]}, runs=runs))
    points = plan(suite)
    mdlm_steps = sorted({p.model.train.steps for p in points if p.model.family == "mdlm"})
    assert mdlm_steps == [2, 4]  # the run's own budget replaces the suite's passes axis
    flow_map = sorted(p.model.train.total_steps(8, cost=p.model.step_cost)
                      for p in points if p.model.family == "flow_map")
    assert flow_map == [3, 6]  # 8 and 16 passes at 8/3 passes a step (psd distillation)
    assert len({p.model.key for p in points}) == 4


def test_a_malformed_train_axis_fails_before_training(tmp_path):
    path = suite_file(tmp_path, train={**SMOKE["train"], "steps": [2, -1]})
    with pytest.raises(SuiteError, match=r"runs\[0\]\.train\.steps"):
        plan(load_suite(path))


def test_learning_curves_and_unmerged_report_rows(tmp_path):
    runs = [{"family": "dfm", "params": {"source": "uniform"}, "train": {"steps": [2, 4]},
             "denoiser": ["trained", "oracle"],
             "samplers": [{"sampler": "euler", "nfe": [1, 2], "step": ["rate", "exact"]}]}]
    out = tmp_path / "out"
    csv_path = run_suite(suite_file(tmp_path, runs=runs), out=out, jobs=1, progress=False)
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["train_steps"] for r in rows if r["denoiser"] == "trained"} == {"2", "4"}
    assert {float(r["train_passes"]) for r in rows if r["denoiser"] == "trained"} == {2.0, 4.0}
    df = load(csv_path)
    assert not df.duplicated(["run", "nfe"]).any()  # every row its own label: nothing to average
    assert df["run"].str.contains("step=rate").any() and df["run"].str.contains("step=exact").any()
    report = write_report(csv_path).read_text()
    assert "Quality against training compute" in report
    every_row = report.split("## Every row")[1].split("## ")[0]
    assert sum(line.startswith("| dfm") for line in every_row.splitlines()) == len(rows)  # one line a row
    by_key = {r["row_key"]: float(r["gen_ppl"]) for r in rows}
    assert all(by_key[k] == v for k, v in zip(df["row_key"], df["gen_ppl"]))
    assert (out / "gen_ppl_vs_train_compute.png").stat().st_size > 0
