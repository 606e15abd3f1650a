"""The local judge is trained exactly once, in a job of its own beside the contestants: two
processes that need it at once train it once (a lock beside its checkpoint), the runner trains
nothing itself, contestants train while the judge trains, and their evaluation waits for it. Every
row carries the judge's own held-out perplexity (`judge_ppl`). A tiny judge on the embedded
language: seconds on a CPU."""
import csv
import math
import shutil
import threading
import time

import pytest
import torch

from flowbench import runner, trainer
from flowbench.data.language import HMMLanguage
from flowbench.judges import LocalJudge
from flowbench.launch.collect import collect
from flowbench.launch.job import run_job
from flowbench.report import write_report
from flowbench.runner import run_suite

TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "steps": 12, "batch_size": 8, "progress": False}
RUNS = [{"family": "ar_gpt2", "samplers": [{"sampler": "kv_cache"}]}]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def gated_judge(monkeypatch):
    """The judge's training waits at its start until `release` is set, and counts the optimiser
    steps it runs (in `steps`); contestants train through the worker's own `train`, unchanged."""
    real = trainer.train
    state = {"release": threading.Event(), "started": threading.Event(), "steps": []}

    def gated(**kw):
        if kw["meta"].get("label") == "local judge":
            state["started"].set()
            assert state["release"].wait(900), "the test never released the judge"
            counted = kw.pop("on_step")

            def on_step(*a):
                state["steps"].append(a[0])
                counted(*a)
            return real(on_step=on_step, **kw)
        return real(**kw)

    monkeypatch.setattr(trainer, "train", gated)
    return state


def judge_kw(tmp_path, language):
    return dict(corpus=language, cache_dir=tmp_path / "cache", device=torch.device("cpu"), **TINY)


def test_two_workers_that_need_the_judge_at_once_train_it_once(tmp_path, gated_judge, capsys):
    language = HMMLanguage(seq_len=8, seed=0)
    assert not LocalJudge.ready(**judge_kw(tmp_path, language))
    made, errors = [], []

    def need_it():
        try:
            made.append(LocalJudge(**judge_kw(tmp_path, language)))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    first = threading.Thread(target=need_it)
    first.start()
    assert gated_judge["started"].wait(600) or errors, errors  # the first holds the judge's lock, training
    second = threading.Thread(target=need_it)
    second.start()
    deadline, said = time.monotonic() + 600, ""
    while "waiting for it" not in said:  # the second waits on the lock
        assert time.monotonic() < deadline and second.is_alive(), "the second worker did not wait for the judge"
        time.sleep(0.05)
        said += capsys.readouterr().out
    gated_judge["release"].set()
    first.join(600), second.join(600)
    assert not errors and len(made) == 2, errors
    assert sorted(j.steps_trained for j in made) == [0, TINY["steps"]]  # one trained, the other loaded
    assert len(gated_judge["steps"]) == TINY["steps"]
    a, b = made
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    assert a.held_out_ppl == b.held_out_ppl and 1 < a.held_out_ppl < language.vocab_size * 2
    assert LocalJudge.ready(**judge_kw(tmp_path, language))


class Recording:
    """A launcher that keeps the jobs it is handed and runs none."""

    name, waits = "local", True

    def __init__(self):
        self.jobs = []

    def launch(self, jobs, *, progress):
        self.jobs += jobs
        return {j.name: {"job_id": "local", "log": ""} for j in jobs}


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_contestants_train_while_the_judge_trains_and_evaluate_after_it(tmp_path, monkeypatch, smoke_suite,
                                                                        gated_judge):
    suite = smoke_suite(runs=RUNS, **{"eval.judge": "local", "eval.judge_params": TINY,
                                      "eval.metrics": ["gen_ppl", "entropy"]})
    out, cache = tmp_path / "out", tmp_path / "cache"
    launcher = Recording()
    monkeypatch.setattr(runner, "make_launcher", lambda *a, **kw: launcher)
    run_suite(suite, out=out, progress=False)
    judge, contestant = launcher.jobs  # the judge's job first, then the contestant's
    assert judge.judge and not judge.points and not judge.trains
    assert contestant.trains and not contestant.judge and len(contestant.points) == 1
    assert not (cache / "judges").exists()  # the runner itself trained no judge

    threads = [threading.Thread(target=run_job, args=(job,)) for job in (judge, contestant)]
    threads[0].start()
    assert gated_judge["started"].wait(600)  # the judge's job holds the judge, training
    threads[1].start()
    deadline = time.monotonic() + 600
    while not any(cache.glob("models/ar_gpt2-*.pt")) or not torch.load(
            next(cache.glob("models/ar_gpt2-*.pt")), weights_only=True)["done"]:
        assert time.monotonic() < deadline, "the contestant did not train while the judge trained"
        time.sleep(0.05)
    time.sleep(0.5)
    assert threads[0].is_alive() and threads[1].is_alive()  # trained; its evaluation waits for the judge
    assert not (contestant.shard / "leaderboard.csv").exists()
    gated_judge["release"].set()
    for t in threads:
        t.join(600)
    assert len(gated_judge["steps"]) == TINY["steps"]  # trained once
    (row,) = rows(contestant.shard / "leaderboard.csv")
    (ckpt,) = (cache / "judges").glob("local-*.pt")
    history = torch.load(ckpt, weights_only=True)["history"]
    assert float(row["judge_ppl"]) == pytest.approx(math.exp(history[-1]["val_loss"]), rel=1e-12)
    assert float(row["gen_ppl_floor"]) > 1  # true data under the same judge: the floor rows are read against

    # the next run finds the judge trained: no judge job; the report names the judge's perplexity
    shutil.rmtree(out)
    launcher.jobs.clear()
    run_suite(suite, out=out, progress=False)
    assert [j.judge for j in launcher.jobs] == [False]
    run_job(launcher.jobs[0])
    collect(out)
    report = write_report(out).read_text()
    assert f"judge `local` (its held-out perplexity {float(row['judge_ppl']):.2f});" in report


def test_a_judge_without_a_perplexity_leaves_the_column_empty(tmp_path, smoke_suite):
    suite = smoke_suite(runs=RUNS, **{"eval.metrics": ["gen_ppl"]})
    (row,) = rows(run_suite(suite, out=tmp_path / "out", jobs=1, progress=False))
    assert row["judge"] == "exact" and row["judge_ppl"] == ""
    assert "judge `exact`;" in write_report(tmp_path / "out").read_text()


def test_a_contestant_trained_before_the_judge_hands_its_evaluation_back(tmp_path, monkeypatch, smoke_suite,
                                                                         gated_judge):
    # the local launcher's first run of a job defers its evaluation while the judge trains elsewhere
    # (no core waits on the judge's lock); its second run evaluates, training nothing again
    from flowbench.launch.job import DEFERRED
    from flowbench.launch.progress import read_heartbeat

    suite = smoke_suite(runs=RUNS, **{"eval.judge": "local", "eval.judge_params": TINY,
                                      "eval.metrics": ["gen_ppl", "entropy"]})
    out = tmp_path / "out"
    launcher = Recording()
    monkeypatch.setattr(runner, "make_launcher", lambda *a, **kw: launcher)
    run_suite(suite, out=out, progress=False)
    judge, contestant = launcher.jobs
    training = threading.Thread(target=run_job, args=(judge,))
    training.start()
    assert gated_judge["started"].wait(600)
    assert run_job(contestant, defer_evaluation=True) == DEFERRED
    assert not (contestant.shard / "leaderboard.csv").exists()
    first = read_heartbeat(contestant.shard)
    assert first["trained"] and first["train_seconds"] > 0 and first["rows_done"] == 0
    gated_judge["release"].set()
    training.join(600)
    (ckpt,) = (tmp_path / "cache").glob("models/ar_gpt2-*.pt")
    saved = ckpt.stat().st_mtime_ns
    assert run_job(contestant, defer_evaluation=True, requeued=True) == 1  # the judge is ready: no deferral
    assert ckpt.stat().st_mtime_ns == saved  # its model was loaded, not trained or saved again
    assert len(rows(contestant.shard / "leaderboard.csv")) == 1
    second = read_heartbeat(contestant.shard)
    assert second["started"] == first["started"] and second["train_seconds"] == first["train_seconds"]
    assert second["rows_done"] == 1


def test_the_local_launcher_runs_a_deferred_job_again_behind_the_queue(monkeypatch):
    import concurrent.futures as cf

    from flowbench.launch import local
    from flowbench.launch.job import DEFERRED

    calls = []

    def fake_run_job(job, *, position, progress, defer_evaluation=False, requeued=False):
        calls.append((job, defer_evaluation, requeued))
        return DEFERRED if job == "a" and defer_evaluation else 1

    monkeypatch.setattr(local, "run_job", fake_run_job)
    monkeypatch.setattr(local.cf, "ProcessPoolExecutor",
                        lambda workers, **kw: cf.ThreadPoolExecutor(1))  # one at a time: a fixed order
    local.LocalLauncher(jobs=2)._run(["a", "b", "c"], workers=2, progress=False)
    assert calls == [("a", True, False), ("b", True, False), ("c", True, False), ("a", False, True)]


def test_the_judge_is_the_same_whatever_the_process_drew_before(tmp_path):
    """Its initial weights come from its seed: a judge trained after other work in the process
    (another job, a contestant) is bit-identical to one trained first; another seed is another judge."""
    language = HMMLanguage(seq_len=8, seed=0)
    torch.manual_seed(0)
    first = LocalJudge(**judge_kw(tmp_path / "a", language)).model.state_dict()
    torch.manual_seed(123)
    torch.rand(1000)  # other work drew from the global generator first
    second = LocalJudge(**judge_kw(tmp_path / "b", language)).model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = LocalJudge(**judge_kw(tmp_path / "c", language), seed=1).model.state_dict()
    assert not all(torch.equal(first[k], other[k]) for k in first)
