"""The overall progress line: counts from the jobs' heartbeats, time left from measured rates."""
import json
import re
from pathlib import Path

import pytest

from flowbench.launch.progress import Heartbeat, overall
from flowbench.runner import run_suite

SMOKE = Path(__file__).parents[2] / "suites" / "smoke.yaml"


def work(tmp_path, name, *, cost, rows, trains=True):
    return {"shard": str(tmp_path / name), "trains": trains, "cost": cost, "rows": rows}


def beat(shard, **state):
    base = {"started": 100.0, "step": 0, "total_steps": 0, "train_seconds": 0.0, "trained": False,
            "rows_done": 0, "rows_total": 0, "eval_seconds": 0.0}
    Path(shard).mkdir(parents=True, exist_ok=True)
    (Path(shard) / "progress.json").write_text(json.dumps({**base, **state}))


def test_time_left_follows_the_measured_rates(tmp_path):
    jobs = [work(tmp_path, "a", cost=10.0, rows=3), work(tmp_path, "b", cost=30.0, rows=3)]
    assert overall(jobs, since=50.0, workers=2, now=60.0).line() == \
        "models 0/2 trained, rows 0/6, 0m10s elapsed, estimating left"
    beat(jobs[0]["shard"], step=50, total_steps=100, train_seconds=20.0)  # 4 s per unit of cost
    half = overall(jobs, since=50.0, workers=2, now=80.0)
    assert (half.models_done, half.rows_done, half.left_s) == (0, 0, None)  # no row timed yet
    beat(jobs[0]["shard"], step=100, total_steps=100, train_seconds=40.0, trained=True,
         rows_done=1, eval_seconds=6.0)
    got = overall(jobs, since=50.0, workers=2, now=150.0)
    # b trains 30 units at 4 s, 5 rows at 6 s, shared by 2 workers
    assert got.left_s == pytest.approx((30 * 4 + 5 * 6) / 2)
    assert got.line() == "models 1/2 trained, rows 1/6, 1m40s elapsed, ~1m15s left"
    assert overall(jobs, since=200.0, workers=2, now=210.0).rows_done == 0  # an earlier run's beat


def test_heartbeat_writes_at_most_every_few_seconds_but_always_the_last_step(tmp_path):
    hb = Heartbeat(tmp_path, rows_total=2, every_s=3600)
    hb.train(1, 10, 0.5)
    hb.train(2, 10, 1.0)  # within the interval: not written
    assert json.loads((tmp_path / "progress.json").read_text())["step"] == 1
    hb.train(10, 10, 5.0)
    assert json.loads((tmp_path / "progress.json").read_text())["trained"] is True


def test_a_run_shows_one_overall_line_that_ends_complete(tmp_path, capsys):
    run_suite(SMOKE, out=tmp_path / "out", jobs=1, progress=True)
    err = capsys.readouterr().err
    lines = re.findall(r"models (\d+)/(\d+) trained, rows (\d+)/(\d+), \S+ elapsed, (\S+) left", err)
    assert lines, err[-2000:]
    done, models, rows_done, rows, left = lines[-1]
    assert done == models and int(models) > 0 and rows_done == rows and int(rows) > 0 and left == "~0m00s"
