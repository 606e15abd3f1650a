"""The slurm launcher without a cluster: `sbatch`, `squeue`, `srun` and `scontrol` are small
scripts on PATH, `sacct` is absent (as where accounting is off), and each job runs as Slurm runs
it, `python -m submitit.core._submit <folder>` with Slurm's variables and its log files.

A job no source reports is judged by its own folder (a result: finished or raised; a log without a
result: died) or reads unknown, never queued; `run` submits again whatever is neither queued nor
running. A time-limit notice during evaluation stops at a batch's end and requeues through
submitit's checkpoint, and the requeued job writes only the rows its shard lacks."""
import csv
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from submitit.core.utils import DelayedSubmission, JobPaths, cloudpickle_dump, pickle_load

from flowbench.launch.record import load_record, point_status, status_lines
from flowbench.launch.slurm import SuiteJob
from flowbench.runner import run_suite

ROOT = Path(__file__).parents[2]
PROFILE = ROOT / "slurm" / "local.yaml"
KILL_AT = Path(__file__).with_name("kill_at.py")
SUITE = {
    "name": "states",
    "corpus": {"name": "hmm_language", "seq_len": 8, "seed": 0},
    "backbone": {"d_model": 32, "n_layers": 1, "n_heads": 2},
    "train": {"steps": 12, "batch_size": 8, "warmup_steps": 2, "eval_every": 4, "checkpoint_every": 4,
              "val_sequences": 16},
    "eval": {"num_samples": 16, "batch_size": 8, "judge": "exact", "metrics": ["gen_ppl", "entropy"]},  # 2 batches
    "seeds": [0],
    "runs": [{"family": "kl_flow", "denoiser": ["trained", "oracle"],
              "samplers": [{"sampler": "ode", "nfe": [1, 2, 4]}]},
             {"family": "dfm", "params": {"source": "uniform"}, "samplers": [{"sampler": "euler", "nfe": [1, 2]}]}],
}


class FakeSlurm:
    """Slurm's commands as scripts of shell built-ins: sbatch numbers jobs from 100, squeue prints
    the lines of `queue` ('id|STATE'), and every call is logged to `calls`."""

    def __init__(self, root: Path):
        self.bin, self.queue_file, self.calls_file = root / "bin", root / "queue", root / "calls"
        self.bin.mkdir(parents=True)
        (root / "next_id").write_text("100\n")
        self.queue_file.write_text("")
        scripts = {
            "sbatch": f'read n < {root / "next_id"}\necho $((n + 1)) > {root / "next_id"}\n'
                      f'echo "Submitted batch job $n"',
            "squeue": f'while IFS= read -r line; do echo "$line"; done < {self.queue_file}',
            "scontrol": "", "srun": ""}
        for name, body in scripts.items():
            path = self.bin / name
            path.write_text(f'#!/bin/sh\necho "{name} $*" >> {self.calls_file}\n{body}\n')
            path.chmod(0o755)

    def queue(self, *lines: str) -> None:
        self.queue_file.write_text("".join(f"{line}\n" for line in lines))

    def calls(self, name: str) -> list[str]:
        text = self.calls_file.read_text() if self.calls_file.exists() else ""
        return [line for line in text.splitlines() if line.split()[0] == name]


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    fake = FakeSlurm(tmp_path / "fake-slurm")
    kept = [d for d in os.environ["PATH"].split(os.pathsep) if d and not (Path(d) / "sacct").exists()]
    monkeypatch.setenv("PATH", os.pathsep.join([str(fake.bin), *kept]))
    monkeypatch.setenv("FLOWBENCH_CACHE", str(tmp_path / "cache"))
    assert shutil.which("sacct") is None and shutil.which("sbatch") == str(fake.bin / "sbatch")
    return fake


def write_suite(tmp_path, **changes) -> Path:
    path = tmp_path / "states.yaml"
    path.write_text(yaml.safe_dump({**SUITE, **changes}))
    return path


def jobs_of(out: Path) -> dict[str, tuple[str, str]]:
    """job name -> (job id, log) of the latest submission"""
    return {e["job"]: (e["job_id"], e["log"]) for e in load_record(out)["points"].values()}


def run_as_slurm(job_id: str, log: str, *, kill_at: str = "") -> subprocess.CompletedProcess:
    """Run a submitted job as Slurm would: submitit's entry point on the executor's folder, with
    the job's variables, its output appended to the log files submitit named."""
    paths = JobPaths(Path(log).parent, job_id=job_id)
    main, _, task = job_id.partition("_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_"))}
    env.update(SUBMITIT_EXECUTOR="slurm", SLURM_JOB_ID=main if not task else str(9000 + int(task)),
               FLOWBENCH_INCLUDE=str(KILL_AT), FLOWBENCH_KILL_AT=kill_at,
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    if task:
        env.update(SLURM_ARRAY_JOB_ID=main, SLURM_ARRAY_TASK_ID=task)
    with paths.stdout.open("a") as stdout, paths.stderr.open("a") as stderr:
        return subprocess.run([sys.executable, "-u", "-m", "submitit.core._submit", str(Path(log).parents[1] / "%j")],
                              env=env, stdout=stdout, stderr=stderr, timeout=600)


def states(out: Path) -> dict[str, tuple[str, str]]:
    """job name -> (state, why), one per job (its points share them)"""
    found = {}
    for entry in point_status(out):
        said = (entry["state"], entry.get("why", ""))
        assert found.setdefault(entry["job"], said) == said
    return found


def shard_rows(out: Path, job: str) -> list[dict]:
    with (out / "shards" / job / "leaderboard.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_without_sacct_jobs_read_from_their_own_files_and_run_resubmits_the_dead(tmp_path, slurm):
    suite, out = write_suite(tmp_path), tmp_path / "out"
    run_suite(suite, out=out, launcher="slurm", cluster=PROFILE, progress=False)
    first = jobs_of(out)
    oracle = "oracle-kl_flow"
    (trained_kl,) = [j for j in first if j.startswith("kl_flow-")]
    (trained_dfm,) = [j for j in first if j.startswith("dfm-")]
    assert len(first) == 3
    slurm.queue(*(f"{job_id}|PENDING" for job_id, _ in first.values()))
    assert {s for s, _ in states(out).values()} == {"queued"}  # from squeue alone

    # the oracle job finishes, the kl_flow model's job is killed in training, dfm's stays queued
    slurm.queue(f"{first[trained_dfm][0]}|PENDING")
    assert run_as_slurm(*first[oracle]).returncode == 0
    assert run_as_slurm(*first[trained_kl], kill_at="training").returncode == -signal.SIGKILL
    now = states(out)
    state, why = now[trained_kl]
    assert state == "failed" and why.startswith("died: log without result") and "no sacct" in why, why
    assert now[oracle] == ("done", "")
    assert now[trained_dfm] == ("queued", "squeue PENDING")
    lines = status_lines(out)
    assert lines[-1] == "3 done, 2 queued, 0 running, 3 failed, 0 unknown"
    assert all("(died: " in line for line in lines if line.startswith("failed"))

    # run again: only the dead job is submitted again
    run_suite(suite, out=out, launcher="slurm", cluster=PROFILE, progress=False)
    second = jobs_of(out)
    assert len(slurm.calls("sbatch")) == 2
    assert second[oracle] == first[oracle] and second[trained_dfm] == first[trained_dfm]
    assert second[trained_kl][0] not in (first[trained_kl][0], "")

    # the resubmitted job vanished from every source before starting; dfm's raised (its result file)
    slurm.queue()
    cloudpickle_dump(("error", "Traceback (most recent call last):\nValueError: out of memory\n"),
                     JobPaths(Path(second[trained_dfm][1]).parent, job_id=second[trained_dfm][0]).result_pickle)
    now = states(out)
    state, why = now[trained_kl]
    assert state == "unknown" and why.startswith("not in squeue, no sacct; no result or log in"), why
    assert now[trained_dfm] == ("failed", "raised ValueError: out of memory")
    run_suite(suite, out=out, launcher="slurm", cluster=PROFILE, progress=False)
    third = jobs_of(out)
    assert len(slurm.calls("sbatch")) == 3 and third[oracle] == first[oracle]
    assert {third[trained_kl][0], third[trained_dfm][0]}.isdisjoint({second[trained_kl][0], second[trained_dfm][0]})


def test_a_time_limit_notice_during_evaluation_requeues_and_the_requeue_writes_only_the_missing_rows(tmp_path, slurm):
    suite = write_suite(tmp_path, runs=[{"family": "kl_flow", "samplers": [{"sampler": "ode", "nfe": [1, 2, 4]}]}])
    out = tmp_path / "out"
    run_suite(suite, out=out, launcher="slurm", cluster=PROFILE, progress=False)
    ((name, (job_id, log)),) = jobs_of(out).items()
    paths = JobPaths(Path(log).parent, job_id=job_id)
    submitted = DelayedSubmission.load(paths.submitted_pickle)

    noticed = run_as_slurm(job_id, log, kill_at="notice-mid-row")
    said = Path(log).read_text() + paths.stdout.read_text()
    assert noticed.returncode != 0 and not paths.result_pickle.exists(), said[-3000:]
    assert slurm.calls("scontrol") == [f"scontrol requeue {job_id}"]  # submitit's requeue
    assert f"evaluation of {name} ode: stopped on request; requeueing" in said  # between batches of row 2
    assert "Calling checkpoint method" in said
    requeued = DelayedSubmission.load(paths.submitted_pickle)  # SuiteJob.checkpoint()'s resubmission
    assert isinstance(requeued.function, SuiteJob) and requeued.args == submitted.args
    (kept,) = shard_rows(out, name)
    samples = {p: p.stat().st_mtime_ns for p in (out / "samples").rglob("*") if p.is_file()}
    assert len(samples) == 1  # the interrupted row wrote no samples

    assert run_as_slurm(job_id, log).returncode == 0  # as Slurm starts the requeued job
    assert pickle_load(paths.result_pickle) == ("success", 2)  # rows written by the requeued job
    rows = shard_rows(out, name)
    assert rows[0] == kept and len({r["row_key"] for r in rows}) == 3
    assert sorted(r["row_key"] for r in rows) == sorted(load_record(out)["points"])
    assert all(p.stat().st_mtime_ns == t for p, t in samples.items())  # the first row's samples untouched
