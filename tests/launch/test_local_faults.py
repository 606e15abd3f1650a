"""A local run killed with SIGKILL anywhere and started again ends with the leaderboard of an
uninterrupted run: every point exactly once, the same metrics. Two runs on one folder: the
second refuses in one line naming the lock. Two runs sharing a model train it once."""
import csv
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from flowbench.__main__ import main
from flowbench.config import load_suite
from flowbench.launch.collect import run_lock
from flowbench.plan import plan
from flowbench.runner import run_suite
from flowbench.worker import checkpoint_path, model_lock, train_model

KILL_AT = Path(__file__).with_name("kill_at.py")
SUITE = {
    "name": "faults",
    "corpus": {"name": "hmm_language", "seq_len": 8, "seed": 0},
    "backbone": {"d_model": 32, "n_layers": 1, "n_heads": 2},
    "train": {"steps": 12, "batch_size": 8, "warmup_steps": 2, "eval_every": 4, "checkpoint_every": 4,
              "val_sequences": 16},
    "eval": {"num_samples": 8, "batch_size": 8, "judge": "exact"},
    "seeds": [0],
    "runs": [{"family": "kl_flow", "denoiser": ["trained", "oracle"], "samplers": [{"sampler": "ode", "nfe": [1, 2]}]},
             {"family": "dfm", "params": {"source": "uniform"}, "samplers": [{"sampler": "euler", "nfe": [1, 2]}]}],
}
TIMING = {"samples_per_s", "tokens_per_s", "latency_s", "peak_mem_mb", "timestamp", "train_seconds", "train_cost_ratio"}


def rows(csv_path):
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def without_timing(rows_):
    return {r["row_key"]: {k: v for k, v in r.items() if k not in TIMING} for r in rows_}


def run_cli(suite, out, cache, kill_at=""):
    env = {**os.environ, "FLOWBENCH_CACHE": str(cache), "FLOWBENCH_KILL_AT": kill_at,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "flowbench", "run", str(suite), "--out", str(out), "--jobs", "1",
                           "--no-progress", "--include", str(KILL_AT)], env=env, capture_output=True, text=True)


def test_killed_anywhere_and_rerun_gives_the_uninterrupted_leaderboard(tmp_path, monkeypatch):
    suite = tmp_path / "faults.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    monkeypatch.setenv("FLOWBENCH_CACHE", str(tmp_path / "cache-reference"))
    reference = rows(run_suite(suite, out=tmp_path / "reference", jobs=1, progress=False))
    assert len(reference) == 6  # 2 trained kl_flow, 2 oracle kl_flow, 2 trained dfm

    out, cache = tmp_path / "out", tmp_path / "cache"
    # jobs: model A (2 rows), model B (2 rows), oracle (2 rows). A dies training; A's first row is
    # in its shard; merged into the leaderboard; A's second row, then B dies training; B's second row
    for where in ("training", "between", "merge", "training", "mid-row"):
        done = run_cli(suite, out, cache, kill_at=where)
        assert done.returncode == -signal.SIGKILL, (where, done.returncode, done.stderr[-2000:])
    board = out / "leaderboard.csv"
    before = len(rows(board)) if board.exists() else 0
    assert 0 < before < len(reference)  # the kills left a partial leaderboard
    final = run_cli(suite, out, cache)
    assert final.returncode == 0, final.stderr[-2000:]
    got = rows(board)
    assert sorted(r["row_key"] for r in got) == sorted(r["row_key"] for r in reference)  # each once
    want = without_timing(reference)
    for key, row in without_timing(got).items():
        assert {k: v for k, v in row.items() if k != "git_sha"} == \
               {k: v for k, v in want[key].items() if k != "git_sha"}, row["family"]


def test_a_second_run_on_the_same_folder_refuses_naming_the_lock(tmp_path, capsys):
    suite = tmp_path / "faults.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    out = tmp_path / "out"
    with run_lock(out):  # as a first run holds it
        assert main(["run", str(suite), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(out / ".run.lock") in err and str(os.getpid()) in err
    assert not (tmp_path / "cache" / "models").exists()  # nothing trained


def test_a_model_in_training_elsewhere_is_waited_for_not_trained_twice(tmp_path, capsys, monkeypatch):
    suite = tmp_path / "faults.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    spec = next(p.model for p in plan(load_suite(suite)) if p.denoiser == "trained")
    monkeypatch.setenv("FLOWBENCH_CACHE", str(tmp_path / "elsewhere"))
    other = train_model(spec, progress=False)  # what the other run will have written
    finished = checkpoint_path(spec)
    monkeypatch.setenv("FLOWBENCH_CACHE", str(tmp_path / "cache"))
    ckpt = checkpoint_path(spec)
    done = {}
    with model_lock(ckpt):  # as another run training this model holds it
        second = threading.Thread(target=lambda: done.update(train_model(spec, progress=False)))
        second.start()
        deadline = time.monotonic() + 60
        while "waiting" not in (said := capsys.readouterr().out) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"{spec.label}: being trained by pid {os.getpid()}; waiting" in said
        assert second.is_alive() and not ckpt.exists()  # it has not started a second training
        shutil.copy(finished, ckpt)  # the other run's final checkpoint
        stamp = ckpt.stat().st_mtime_ns
    second.join(timeout=120)
    assert not second.is_alive() and done == other
    assert ckpt.stat().st_mtime_ns == stamp  # found done, not trained again
