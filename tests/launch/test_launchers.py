"""Launchers without a cluster: submitit's DebugExecutor runs the Slurm code path in-process and
gives the local launcher's rows; the submission record, status and collect; cluster profiles."""
import csv
from pathlib import Path

import pytest

from flowbench.__main__ import main
from flowbench.launch.profile import ProfileError, load_profile
from flowbench.launch.record import load_record, point_status
from flowbench.runner import run_suite

ROOT = Path(__file__).parents[2]
SMOKE = ROOT / "suites" / "smoke.yaml"
METRICS = ("gen_ppl", "nll_mean", "entropy", "val_loss", "train_steps", "backbone_calls")


def rows(csv_path):
    with open(csv_path, newline="") as f:
        return {r["row_key"]: {m: r[m] for m in METRICS} for r in csv.DictReader(f)}


@pytest.fixture
def one_thread():
    """Bit-for-bit equal rows from two trainings in one process need one torch thread: with two,
    the validation loss of two identical models differed in its last bits on one machine (an
    AMD EPYC; the samples and every other metric equal), as reductions split across threads may."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_debug_launcher_gives_the_local_rows_and_a_record(tmp_path, monkeypatch, one_thread):
    only = {"family": "mdlm"}
    local = rows(run_suite(SMOKE, out=tmp_path / "local", only=only, jobs=1, progress=False))
    monkeypatch.setenv("FLOWBENCH_CACHE", str(tmp_path / "cache-debug"))  # trains again
    out = tmp_path / "debug"
    debug = rows(run_suite(SMOKE, out=out, only=only, launcher="debug", progress=False))
    assert debug == local and len(local) == 6  # 3 trained and 3 oracle points
    record = load_record(out)["points"]
    assert set(record) == set(local)
    assert {e["job"] for e in record.values()} == {"oracle-mdlm"} | {e["job"] for e in record.values()
                                                                      if e["job"].startswith("mdlm-")}
    assert [e["state"] for e in point_status(out)] == ["done"] * 6
    (shard,) = [p for p in (out / "shards").iterdir() if p.name.startswith("mdlm-")]
    (shard / "leaderboard.csv").unlink()  # collect is idempotent and needs no shard it merged
    assert main(["collect", str(out)]) == 0 and rows(out / "leaderboard.csv") == local


def test_status_without_a_record_fails_in_one_line(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "submission record" in err


def test_profile_misspelled_key_names_the_allowed_keys(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("partiton: gpu\n")
    with pytest.raises(ProfileError, match=r"partiton: unknown key \(allowed keys: partition, account"):
        load_profile(path)
    assert main(["run", str(SMOKE), "--launcher", "slurm", "--cluster", str(path), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 2


def test_shipped_profiles_load():
    local = load_profile(ROOT / "slurm" / "local.yaml").executor_parameters()
    assert local["slurm_partition"] == "local" and local["cpus_per_task"] == 1
    gpu = load_profile(ROOT / "slurm" / "gpu-cluster.yaml").executor_parameters()
    assert gpu["gpus_per_node"] == 1 and "slurm_account" not in gpu  # null keys are left to the site


def test_the_record_names_its_own_folder_relatively_and_moves_with_it(tmp_path):
    """A committed or copied results folder must not carry one machine's folders: shards and logs
    inside it are written relative to it and read back as paths where it now lives."""
    import json
    import shutil
    from types import SimpleNamespace

    from flowbench.launch.record import save_record

    out = tmp_path / "run"
    point = SimpleNamespace(row_key="abc123", label="mdlm(...) ancestral nfe=4")
    job = SimpleNamespace(name="mdlm-1", shard=out / "shards" / "mdlm-1", trains=True, cost=8.0, held=0.0, points=[point])
    save_record(out, launcher="slurm", jobs=[job], ids={"mdlm-1": "42"},
                logs={"mdlm-1": str(out / "slurm" / "42_log.err")})
    text = (out / "submission.json").read_text()
    assert str(tmp_path) not in text
    on_disk = json.loads(text)
    assert on_disk["jobs"]["mdlm-1"]["shard"] == str(Path("shards") / "mdlm-1")
    assert on_disk["points"]["abc123"]["log"] == str(Path("slurm") / "42_log.err")
    moved = tmp_path / "elsewhere"
    shutil.move(out, moved)
    record = load_record(moved)
    assert record["jobs"]["mdlm-1"]["shard"] == str(moved / "shards" / "mdlm-1")
    assert record["points"]["abc123"]["log"] == str(moved / "slurm" / "42_log.err")
    # a path outside the folder (a cluster's shared log folder) is kept as given
    save_record(moved, launcher="slurm", jobs=[job], ids={"mdlm-1": "43"}, logs={"mdlm-1": "/logs/43.err"})
    assert load_record(moved)["points"]["abc123"]["log"] == "/logs/43.err"


def test_jobs_start_by_their_whole_work_training_and_evaluation(tmp_path):
    """An oracle job trains nothing but may evaluate more than a small model costs to train: it
    must not be left to the end, where one core would evaluate it while the other idles."""
    import yaml

    from flowbench.config import load_suite
    from flowbench.launch.job import make_jobs
    from flowbench.plan import plan

    suite = yaml.safe_load(SMOKE.read_text())
    suite["train"]["steps"] = 400
    suite["eval"]["num_samples"] = 256
    suite["runs"] = [{"family": "mdlm", "denoiser": ["trained", "oracle"],
                      "samplers": [{"sampler": "ancestral", "nfe": [1, 2, 4, 8, 16, 32, 64, 128]}]},
                     {"family": "ar_gpt2", "samplers": [{"sampler": "kv_cache"}]}]
    path = tmp_path / "work.yaml"
    path.write_text(yaml.safe_dump(suite))
    points = plan(load_suite(path))
    jobs = make_jobs(points, suite_path=path, out=tmp_path, cache=tmp_path, only=None,
                     index_of={id(p): i for i, p in enumerate(points)}, key_of=lambda p: str(id(p)),
                     replaced={}, git_sha="abc", timestamp="now")
    names = [j.name.split("-")[0] for j in jobs]
    assert names == ["mdlm", "oracle", "ar_gpt2"], names  # training cost alone puts the oracle last
    assert jobs[1].cost == 0 and jobs[1].work > jobs[2].work > jobs[2].cost > 0
