"""The suite runner end to end on the smoke suite, and its handling of bad input."""
import csv
import math
import shutil
from pathlib import Path

import pytest
import torch

from flowbench import trainer
from flowbench.__main__ import main
from flowbench.config import SuiteError, load_suite
from flowbench.plan import plan
from flowbench.report import write_report
from flowbench.runner import run_suite
from flowbench.samples import row_ids
from flowbench.worker import training

SMOKE = Path(__file__).parents[1] / "suites" / "smoke.yaml"


def rows(csv_path):
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


TIMING = {"samples_per_s", "tokens_per_s", "latency_s", "peak_mem_mb", "timestamp", "train_seconds",
          "train_cost_ratio"}


def by_key(csv_path, columns=None):
    """row_key -> the row's values in `columns` (default: every column but timing and timestamp)."""
    return {r["row_key"]: {k: v for k, v in r.items() if (k in columns if columns else k not in TIMING)}
            for r in rows(csv_path)}


def test_smoke_suite_end_to_end_and_no_duplicates(tmp_path):
    out = tmp_path / "out"
    csv_path = run_suite(SMOKE, out=out, jobs=1, progress=False)
    first = rows(csv_path)
    expected = len(plan(load_suite(SMOKE)))
    assert len(first) == expected
    for r in first:
        for col in ("gen_ppl", "gen_ppl_mean", "entropy", "samples_per_s", "nll_median"):
            assert math.isfinite(float(r[col])), (r["family"], col)
        assert r["git_sha"] and r["row_key"] and r["torch"]
        assert (Path(out) / "samples" / f"{r['row_key']}.npy.xz").exists()
        if r["denoiser"] == "trained":
            assert int(r["params"]) > 0 and int(r["train_steps"]) == 2
            # the measured cost: its steps' seconds, per declared pass, over a bare backbone step's
            assert float(r["train_seconds"]) > 0, r["family"]
            assert 0 < float(r["train_cost_ratio"]) < math.inf, r["family"]
        assert float(r["backbone_calls"]) <= float(r["nfe"])
    families = {r["family"] for r in first}
    assert {"ar_gpt2", "mdlm"} <= families
    run_suite(SMOKE, out=out, jobs=1, progress=False)
    assert len(rows(csv_path)) == expected  # the second run adds nothing
    report = write_report(csv_path).read_text()
    assert "dfm source=mask/euler" in report and "dfm source=uniform/euler" in report
    assert (Path(out) / "gen_ppl_vs_nfe.png").stat().st_size > 0


def test_interrupted_run_resumes_without_loss_or_duplicates(tmp_path):
    out = tmp_path / "out"
    csv_path = run_suite(SMOKE, out=out, jobs=1, progress=False)
    complete = rows(csv_path)
    ckpts = sorted((tmp_path / "cache" / "models").glob("*.pt"))
    mtimes = [p.stat().st_mtime_ns for p in ckpts]
    lines = csv_path.read_bytes().splitlines(keepends=True)
    csv_path.write_bytes(b"".join(lines[:3]) + lines[3][:20])  # killed while writing row 3
    run_suite(SMOKE, out=out, jobs=1, progress=False)
    again = rows(csv_path)
    assert sorted(r["row_key"] for r in again) == sorted(r["row_key"] for r in complete)
    assert [p.stat().st_mtime_ns for p in ckpts] == mtimes  # finished models were reused
    metrics = ("gen_ppl", "val_loss", "entropy")
    assert by_key(csv_path, metrics) == {r["row_key"]: {m: r[m] for m in metrics} for r in complete}


class Killed(Exception):
    """Stands in for kill -9 in the middle of training."""


def test_training_killed_between_checkpoints_gives_the_same_leaderboard(tmp_path, monkeypatch, smoke_suite):
    """Every model is killed after 6 of 12 steps (last checkpoint at 4) and the run started again
    until it finishes: every row equals that of an uninterrupted run in another cache and folder."""
    suite = smoke_suite(**{
        "train": {"steps": 12, "batch_size": 8, "warmup_steps": 2, "eval_every": 4,
                  "checkpoint_every": 4, "val_sequences": 16},
        "runs": [{"family": "kl_flow", "samplers": [{"sampler": "ode", "nfe": [2]}]},
                 {"family": "dfm", "params": {"source": "uniform"},
                  "samplers": [{"sampler": "euler", "nfe": [1, 2]}]}]})
    monkeypatch.setenv("FLOWBENCH_CACHE", str(tmp_path / "cache-uninterrupted"))
    reference = by_key(run_suite(suite, out=tmp_path / "uninterrupted", jobs=1, progress=False))

    def dies_on_first_attempt(*, family, checkpoint, **kw):
        if not checkpoint.exists():
            loss, steps = family.loss, 0

            def dying_loss(model, x1, **kw):
                nonlocal steps
                steps += model.training  # validation calls the loss too, in eval mode
                if steps > 6:
                    raise Killed
                return loss(model, x1, **kw)

            family.loss = dying_loss
        return trainer.train(family=family, checkpoint=checkpoint, **kw)

    monkeypatch.setenv("FLOWBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(training, "train", dies_on_first_attempt)
    kills = 0
    while True:
        try:
            csv_path = run_suite(suite, out=tmp_path / "out", jobs=1, progress=False)
            break
        except Killed:
            kills += 1
    assert kills == 2  # each model once
    assert len(reference) == 3 and by_key(csv_path) == reference



@pytest.mark.parametrize("change, message", [
    ({"trian": {"steps": 1}}, "trian: unknown key"),
    ({"runs.1.family": "mdml"}, "runs[1].family: unknown family 'mdml'; did you mean 'mdlm'"),
    ({"runs.1.samplers.0.nfe": [0, 2]}, "runs[1].samplers[0].nfe: Input should be greater than 0"),
    ({"runs.1.samplers.0.sampler": "euler"}, "unknown sampler 'euler' for mdlm (allowed: ancestral"),
    ({"runs.1.params": {"schedule": "cosine"}}, "runs[1].params.schedule"),
    ({"runs.0.samplers.0.nfe": 3}, "nfe must equal seq_len=8"),
    ({"corpus.name": "text_files", "corpus.paths": ["/no/such/file.txt"]}, "/no/such/file.txt"),
    ({"train.steps": None}, "give exactly one budget of steps, tokens, passes"),
    ({"runs.1.eval": {"judge": "local"}}, "runs[1].eval.judge: a run may change only num_samples, batch_size"),
    ({"runs.1.eval": {"num_samples": 0}}, "runs[1].eval.num_samples: Input should be greater than 0"),
])
def test_bad_suites_fail_before_training_in_one_line(tmp_path, capsys, change, message, smoke_suite):
    path = smoke_suite(**change)
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "cache" / "models").exists()  # nothing was trained


def test_missing_suite_file(capsys, tmp_path):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "suite file not found" in capsys.readouterr().err


def test_corpus_that_cannot_fill_the_length_fails_before_training(tmp_path, capsys, smoke_suite):
    text = tmp_path / "tiny.txt"
    text.write_text("\n".join(f"line {i} of a small text" for i in range(30)))
    path = smoke_suite(**{"corpus.name": "text_files", "corpus.paths": [str(text)],
                                    "corpus.seq_len": 64, "corpus.vocab_size": 300,
                                    "eval.judge": "local"})
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "64" in err and "\n" not in err.strip()
    assert not (tmp_path / "cache" / "models").exists()


def test_corrupt_checkpoint_fails_in_one_line_naming_the_file(tmp_path, capsys):
    out = tmp_path / "out"
    run_suite(SMOKE, out=out, jobs=1, progress=False, only={"family": "mdlm"})
    (ckpt,) = (tmp_path / "cache" / "models").glob("mdlm-*.pt")
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # truncated, as by a full disk
    (out / "leaderboard.csv").unlink()  # ask for the rows again, so the model is needed
    shutil.rmtree(out / "shards")  # the jobs' own copies of the rows, which collect would merge
    assert main(["run", str(SMOKE), "--out", str(out), "--only", "family=mdlm", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "corrupt checkpoint" in err and ckpt.name in err


def test_compiled_sampling_is_keyed_and_marked_apart(tmp_path, smoke_suite):
    runs = [{"family": "flow_map", "denoiser": ["trained"], "samplers": [{"sampler": "flow_map", "nfe": [1]}]}]
    eager = run_suite(smoke_suite("eager.yaml", runs=runs), out=tmp_path / "e", jobs=1, progress=False)
    compiled = run_suite(smoke_suite("compiled.yaml", runs=runs, **{"eval.compile": True}),
                         out=tmp_path / "c", jobs=1, progress=False)
    (e,), (c,) = rows(eager), rows(compiled)
    assert (e["compiled"], c["compiled"]) == ("False", "True")
    assert e["row_key"] != c["row_key"] and e["config_hash"] == c["config_hash"]  # one model, two rows
    assert math.isfinite(float(c["gen_ppl"]))
    report = write_report(compiled).read_text()
    assert "compiled" in report


def test_a_run_samples_its_own_count_keyed_and_labelled_apart(tmp_path, smoke_suite):
    """A run's eval override (RunEntry.eval) changes its rows' sample count, not the other runs',
    and keys and labels them apart from the same model's rows at the suite's count; the first
    batch of the larger row is the smaller row's samples (same seed and batch size)."""
    sampler = [{"sampler": "flow_map", "nfe": [1]}]
    runs = [{"family": "flow_map", "samplers": sampler},
            {"family": "flow_map", "samplers": sampler, "eval": {"num_samples": 24}}]
    csv_path = run_suite(smoke_suite(runs=runs), out=tmp_path / "o", jobs=1, progress=False)
    plain, more = sorted(rows(csv_path), key=lambda r: int(r["num_samples"]))
    assert (plain["num_samples"], more["num_samples"]) == ("8", "24")
    assert plain["row_key"] != more["row_key"] and plain["config_hash"] == more["config_hash"]
    first = row_ids(tmp_path / "o", plain["row_key"])
    assert torch.equal(row_ids(tmp_path / "o", more["row_key"])[:8], first)
    report = write_report(csv_path).read_text()
    assert "flow_map/flow_map samples=24" in report and "#" not in report.split("## ")[1]


@pytest.mark.parametrize("name", ["nfe_sweep", "flow_map_seeds", "learning_curves", "recipe_ablation",
                                  "tstar_sweep", "frontier", "beta_sweep", "english",
                                  "english_curve", "english_curve_long"])
def test_committed_reference_rows_are_the_rows_its_suite_plans(name):
    """A change of what keys a row (a new field, a renamed default) would make a fresh clone
    recompute the reference instead of finding it: the suite's planned keys are the committed ones."""
    from flowbench.leaderboard import current_rows
    from flowbench.compare import stale_reason
    from flowbench.worker import row_key_function

    root = Path(__file__).parents[1]
    suite = load_suite(root / "suites" / f"{name}.yaml")
    key_of = row_key_function(suite)
    reference = root / "results" / "reference" / name
    committed = {r["row_key"] for r in current_rows(rows(reference / "leaderboard.csv"))}
    planned = {key_of(p) for p in plan(suite)}
    if stale_reason(reference) is not None:  # marked for recomputation: the mark must not outlive it
        assert planned != committed, f"{reference} matches its suite again: remove its STALE file"
    else:
        assert planned == committed
