"""What keys a row and a model: the eval batch size and the sampling seed key rows; logging settings
and the thread count key no model; training and sampling seeds are separate axes; a training
worker's thread count is fixed and recorded."""
import csv
from pathlib import Path

import pytest
import torch

from flowbench.__main__ import main
from flowbench.config import load_suite
from flowbench.plan import plan
from flowbench.runner import run_suite
from flowbench.samples import row_ids
from flowbench.trainer import load_checkpoint
from flowbench.worker import checkpoint_path, row_key_function, train_model

pytestmark = pytest.mark.usefixtures("one_thread")


def rows(csv_path):
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def keys(path):
    suite = load_suite(path)
    key_of = row_key_function(suite)
    points = plan(suite)
    return [key_of(p) for p in points], [p.model.key for p in points]


def samples(out: Path, row: dict) -> list:
    return row_ids(out, row["row_key"]).tolist()


def test_eval_batch_size_keys_rows_not_models(smoke_suite):
    """The batch size orders the sampler's draws: a suite that differs only in it (or a run's own
    batch size) gets other row keys, on the same models."""
    base_rows, base_models = keys(smoke_suite("a.yaml"))
    other_rows, other_models = keys(smoke_suite("b.yaml", **{"eval.batch_size": 4}))
    assert other_models == base_models
    assert not set(other_rows) & set(base_rows)
    run_rows, _ = keys(smoke_suite("c.yaml", **{"runs.1.eval": {"batch_size": 4}}))
    n_mdlm = sum(1 for p in plan(load_suite(smoke_suite("a.yaml"))) if p.model.family == "mdlm")
    assert len(set(run_rows) - set(base_rows)) == n_mdlm  # only that run's rows moved


def test_logging_settings_and_threads_key_no_model(smoke_suite):
    base_rows, base_models = keys(smoke_suite("a.yaml"))
    logging = {"train.eval_every": 1, "train.checkpoint_every": 7, "train.val_sequences": 40, "train.threads": 2}
    for name, value in logging.items():
        assert keys(smoke_suite(f"{name}.yaml", **{name: value})) == (base_rows, base_models), name
    _, other_models = keys(smoke_suite("lr.yaml", **{"train.lr": 1e-3}))  # what does change the weights
    assert not set(other_models) & set(base_models)


@pytest.mark.parametrize("family", ["ar_gpt2", "mdlm", "dfm", "kl_flow", "dirichlet_flow", "flow_map"])
def test_logging_settings_change_no_weight(tmp_path, monkeypatch, smoke_suite, family):
    """Why they left the model key: validating every step on 40 sequences and checkpointing every
    2 steps trains the weights of validating once on 16 (validation draws from its own generator;
    flow_map's distillation is on for the second half)."""
    sampler = {"ar_gpt2": {"sampler": "kv_cache"}, "mdlm": {"sampler": "ancestral", "nfe": 2},
               "dfm": {"sampler": "euler", "nfe": 2}, "flow_map": {"sampler": "flow_map", "nfe": 2}}
    runs = [{"family": family, "samplers": [sampler.get(family, {"sampler": "ode", "nfe": 2})]}]
    weights = []
    for i, train in enumerate([{"eval_every": 6, "val_sequences": 16, "checkpoint_every": 500},
                               {"eval_every": 1, "val_sequences": 40, "checkpoint_every": 2}]):
        monkeypatch.setenv("FLOWBENCH_CACHE", str(tmp_path / f"cache{i}"))
        suite = load_suite(smoke_suite(f"{i}.yaml", runs=runs, train={"steps": 6, "batch_size": 8,
                                                                     "warmup_steps": 1, **train}))
        (spec,) = {p.model.key: p.model for p in plan(suite)}.values()
        train_model(spec, progress=False)
        state = load_checkpoint(checkpoint_path(spec))
        assert len(state["history"]) == (1 if i == 0 else 6)
        weights.append(state["weights"])
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name


def test_sample_seeds_are_an_axis_of_their_own(tmp_path, smoke_suite):
    """Sampling seeds split into tuning and held-out rows, keyed apart, recorded in the row; a
    run without them samples with the training seed, as before they existed."""
    sampler = [{"sampler": "ancestral", "nfe": [2]}]
    runs = [{"family": "mdlm", "samplers": sampler},
            {"family": "mdlm", "samplers": sampler, "eval": {"sample_seeds": {"tuning": [0], "held_out": [5, 6]}}}]
    out = tmp_path / "o"
    found = {(r["sample_seed"], r["split"]): r for r in rows(run_suite(smoke_suite(runs=runs), out=out, jobs=1,
                                                                          progress=False))}
    assert set(found) == {("0", ""), ("0", "tuning"), ("5", "held_out"), ("6", "held_out")}
    assert len({r["row_key"] for r in found.values()}) == 4
    assert {r["config_hash"] for r in found.values()} == {found["0", ""]["config_hash"]}  # one model
    plain, tuning, held, held2 = (samples(out, found[k]) for k in
                                  (("0", ""), ("0", "tuning"), ("5", "held_out"), ("6", "held_out")))
    assert tuning == plain  # seed 0 is what the training seed 0 drew
    assert held != tuning and held2 != held


def test_oracle_rows_with_sample_seeds_do_not_depend_on_the_training_seed(smoke_suite):
    runs = [{"family": "mdlm", "seeds": [0, 1], "denoiser": ["trained", "oracle"],
             "samplers": [{"sampler": "ancestral", "nfe": [2]}],
             "eval": {"sample_seeds": {"tuning": [3], "held_out": [4]}}}]
    suite = load_suite(smoke_suite(runs=runs))
    key_of = row_key_function(suite)
    points = plan(suite)
    trained = {key_of(p) for p in points if p.denoiser == "trained"}
    oracle = {key_of(p) for p in points if p.denoiser == "oracle"}
    assert len(trained) == 4 and len(oracle) == 2  # 2 training x 2 sampling seeds; 2 sampling seeds
    # without sampling seeds an oracle row keeps its training seed, its sampler's seed
    plain = load_suite(smoke_suite("plain.yaml", runs=[{**runs[0], "eval": {}}]))
    key_of = row_key_function(plain)
    assert len({key_of(p) for p in plan(plain) if p.denoiser == "oracle"}) == 2


def test_a_run_takes_its_own_training_seeds(smoke_suite):
    runs = [{"family": "mdlm", "seeds": [0, 1, 2], "samplers": [{"sampler": "ancestral", "nfe": [2]}]},
            {"family": "dfm", "samplers": [{"sampler": "euler", "nfe": [2]}]}]
    points = plan(load_suite(smoke_suite(runs=runs, seeds=[7])))
    seeds = {f: sorted({p.model.seed for p in points if p.model.family == f}) for f in ("mdlm", "dfm")}
    assert seeds == {"mdlm": [0, 1, 2], "dfm": [7]}
    assert len({p.model.key for p in points if p.model.family == "mdlm"}) == 3


@pytest.mark.parametrize("change, message", [
    ({"eval.sample_seeds": {"tuning": [1, 2], "held_out": [2]}},
     "eval.sample_seeds: sampling seed 2 is both a tuning and a held-out seed"),
    ({"eval.sample_seeds": {"tuning": [1, 1], "held_out": [2]}}, "eval.sample_seeds.tuning: sampling seed 1 is listed twice"),
    ({"eval.sample_seeds": {"tuning": [], "held_out": [2]}}, "eval.sample_seeds.tuning: give at least one sampling seed"),
    ({"eval.sample_seeds": {"tuning": [1]}}, "eval.sample_seeds.held_out: Field required"),
    ({"eval.sample_seeds": {"tuning": [-1], "held_out": [2]}}, "eval.sample_seeds.tuning[0]: Input should be greater"),
    ({"runs.0.eval": {"sample_seeds": {"tuning": [1], "held_out": [2]}},
      "runs.1.eval": {"sample_seeds": {"tuning": [2], "held_out": [3]}}},
     "runs[1].eval.sample_seeds: sampling seed 2 is a tuning seed here and a held_out seed in runs[0]"),
    ({"runs.1.seeds": []}, "runs[1].seeds: give at least one training seed"),
    ({"seeds": [0, 0]}, "seeds: training seed 0 is listed twice"),
    ({"train.threads": [1, 2]}, "runs[0].train.threads: one thread count, not a sweep axis"),
])
def test_bad_seeds_and_threads_fail_in_one_line(tmp_path, capsys, change, message, smoke_suite):
    assert main(["run", str(smoke_suite(**change)), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "cache" / "models").exists()


def test_a_training_job_runs_on_its_own_thread_count_and_records_it(tmp_path, monkeypatch, smoke_suite):
    """A job alone in the pool used to train on every core; now on train.threads (1) or --threads,
    and the row records the count the model was trained on."""
    runs = [{"family": "mdlm", "samplers": [{"sampler": "ancestral", "nfe": [2]}]}]
    path = smoke_suite(runs=runs)
    torch.set_num_threads(2)  # the process's count, which a lone job inherited
    (row,) = rows(run_suite(path, out=tmp_path / "a", jobs=2, progress=False))
    assert row["train_threads"] == "1" and torch.get_num_threads() == 2  # restored after the job
    monkeypatch.setenv("FLOWBENCH_CACHE", str(tmp_path / "cache2"))
    (row2,) = rows(run_suite(path, out=tmp_path / "b", jobs=1, progress=False, threads=3))
    assert row2["train_threads"] == "3" and row2["row_key"] == row["row_key"]
    with pytest.raises(SystemExit):
        main(["run", str(path), "--threads", "0", "--no-progress"])
