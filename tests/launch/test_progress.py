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


def test_a_job_whose_checkpoint_the_cache_holds_has_only_the_rest_of_its_training_left(tmp_path):
    jobs = [work(tmp_path, "a", cost=10.0, rows=1), {**work(tmp_path, "b", cost=30.0, rows=1), "held": 30.0},
            {**work(tmp_path, "c", cost=30.0, rows=1), "held": 10.0}]
    beat(jobs[0]["shard"], step=100, total_steps=100, train_seconds=40.0, trained=True,
         rows_done=1, eval_seconds=6.0)
    # b (reused) trains nothing, c (a killed run's, a third done) 20 units at 4 s; 2 rows at 6 s
    assert overall(jobs, since=50.0, workers=2, now=150.0).left_s == pytest.approx((20 * 4 + 2 * 6) / 2)
    beat(jobs[2]["shard"], step=50, total_steps=100, train_seconds=60.0)  # once started, its own steps say
    assert overall(jobs, since=50.0, workers=2, now=150.0).left_s == pytest.approx((15 * 4 + 2 * 6) / 2)


def test_jobs_know_what_the_cache_holds_of_their_training(tmp_path):
    import torch

    from flowbench.launch.job import make_jobs
    from flowbench.config import load_suite
    from flowbench.plan import plan
    from flowbench.worker import checkpoint_path, held_cost, training_cost

    run_suite(SMOKE, out=tmp_path / "out", jobs=1, progress=False)
    points = [p for p in plan(load_suite(SMOKE)) if p.denoiser == "trained"]
    spec = points[0].model
    path = checkpoint_path(spec)
    assert held_cost(spec) == training_cost(spec) > 0  # finished
    jobs = make_jobs(points, suite_path=SMOKE, out=tmp_path / "again", cache=tmp_path / "cache", only=None,
                     index_of={id(p): i for i, p in enumerate(points)}, key_of=lambda p: str(id(p)),
                     replaced={}, git_sha="x", timestamp="t")
    assert all(j.held == j.cost > 0 and j.work == j.eval_cost for j in jobs)
    state = torch.load(path, weights_only=True)
    total = state["step"]
    assert total >= 2
    torch.save({**state, "step": total // 2}, path)  # a killed run's checkpoint, part done
    assert held_cost(spec) == pytest.approx(training_cost(spec) * (total // 2) / total)
    path.write_bytes(b"not a checkpoint")
    assert held_cost(spec) == 0.0  # unreadable: counted as none (its job says what is wrong)
    path.unlink()
    assert held_cost(spec) == 0.0


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
