"""The slurm launcher against a real Slurm (slurm/local-cluster.sh; CI starts it): the smoke suite
gives the leaderboard of the local launcher, and a training job cancelled with scancel resumes
from its checkpoint when the suite is run again. Skipped where there is no Slurm, unless
FLOWBENCH_REQUIRE_SLURM=1 (CI), where a missing cluster fails."""
import csv
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flowbench.launch.record import load_record
from flowbench.runner import run_suite
from flowbench.trainer import load_checkpoint

ROOT = Path(__file__).parents[2]
SMOKE = ROOT / "suites" / "smoke.yaml"
PROFILE = ROOT / "slurm" / "local.yaml"
STEPS = 4000  # the cancelled job's training budget: tens of seconds


def slurm_missing() -> str | None:
    if shutil.which("sinfo") is None:
        return "no Slurm here (sinfo absent); slurm/local-cluster.sh start brings one up"
    try:
        up = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo timed out: no Slurm controller answers"
    if up.returncode != 0 or not up.stdout.strip():
        return f"no Slurm controller answers ({up.stderr.strip()[:120]}); slurm/local-cluster.sh start"
    return None


@pytest.fixture(autouse=True)
def slurm():
    reason = slurm_missing()
    if reason and os.environ.get("FLOWBENCH_REQUIRE_SLURM") == "1":
        pytest.fail(reason)
    if reason:
        pytest.skip(reason)


def cli(*args, cache):
    env = {**os.environ, "FLOWBENCH_CACHE": str(cache),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "flowbench", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def rows(csv_path):
    with open(csv_path, newline="") as f:
        return {r["row_key"]: r for r in csv.DictReader(f)}


def test_smoke_suite_on_slurm_gives_the_local_leaderboard(tmp_path):
    # two families of the smoke suite: trained and oracle jobs and a params sweep (dfm's sources),
    # five jobs, so the test takes a minute or two rather than one job per family
    suite = yaml.safe_load(SMOKE.read_text())
    suite["runs"] = [r for r in suite["runs"] if r["family"] in ("mdlm", "dfm")]
    smoke = tmp_path / "smoke.yaml"
    smoke.write_text(yaml.safe_dump(suite))
    out = tmp_path / "slurm"
    submitted = cli("run", smoke, "--out", out, "--launcher", "slurm", "--cluster", PROFILE, "--no-progress",
                    cache=tmp_path / "cache-slurm")
    assert "queued" in submitted and "python -m flowbench status" in submitted
    deadline = time.time() + 900
    while "0 queued, 0 running" not in (status := cli("status", out, cache=tmp_path)).splitlines()[-1]:
        assert time.time() < deadline, status
        time.sleep(2)
    assert " 0 failed" in status.splitlines()[-1], status
    cli("collect", out, cache=tmp_path)
    record = load_record(out)["points"]
    assert all(p["job_id"] and Path(p["log"]).exists() for p in record.values())
    local = rows(run_suite(smoke, out=tmp_path / "local", jobs=1, progress=False))
    slurm = rows(out / "leaderboard.csv")
    assert sorted(slurm) == sorted(local) and len(record) == len(local)
    for key, want in local.items():
        for metric in ("gen_ppl", "nll_mean", "entropy", "val_loss", "backbone_calls"):
            if want[metric]:
                assert math.isclose(float(slurm[key][metric]), float(want[metric]), rel_tol=1e-6), metric


def test_a_cancelled_training_job_resumes_from_its_checkpoint(tmp_path):
    suite = yaml.safe_load(SMOKE.read_text())
    suite["train"].update(steps=STEPS, eval_every=STEPS, checkpoint_every=10 * STEPS)  # saved only when stopped
    suite["runs"] = [{"family": "mdlm", "samplers": [{"sampler": "ancestral", "nfe": [2]}]}]
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(suite))
    out, cache = tmp_path / "out", tmp_path / "cache"
    cli("run", path, "--out", out, "--launcher", "slurm", "--cluster", PROFILE, "--no-progress", cache=cache)
    (entry,) = load_record(out)["points"].values()
    log = Path(entry["log"]).with_suffix(".out")
    deadline = time.time() + 300
    while "training from step 0" not in (log.read_text() if log.exists() else ""):
        assert time.time() < deadline
        time.sleep(0.2)
    time.sleep(3)  # some training steps
    subprocess.run(["scancel", entry["job_id"]], check=True)  # SIGTERM: checkpoint at the step's end
    while subprocess.run(["squeue", "-h", "-j", entry["job_id"], "-t", "PD,R,CG"], capture_output=True,
                         text=True).stdout.strip():  # until the job has ended
        assert time.time() < deadline
        time.sleep(0.2)
    (ckpt,) = (cache / "models").glob("mdlm-*.pt")  # written only on the stop request
    state = load_checkpoint(ckpt)
    assert 0 < state["step"] < STEPS and not state["done"]
    assert "0 done" in cli("status", out, cache=cache).splitlines()[-1]

    cli("run", path, "--out", out, "--launcher", "slurm", "--cluster", PROFILE, "--wait", "--no-progress",
        cache=cache)
    (entry,) = load_record(out)["points"].values()
    assert f"training from step {state['step']}" in Path(entry["log"]).with_suffix(".out").read_text()
    (row,) = rows(out / "leaderboard.csv").values()
    assert int(row["train_steps"]) == STEPS
