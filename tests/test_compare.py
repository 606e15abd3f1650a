"""Reference results apart from a user's runs, and `compare`'s three verdicts against them."""
import csv
import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from flowbench.__main__ import main
from flowbench.compare import compare, training_spreads
from flowbench.config import load_suite
from flowbench.leaderboard import current_rows
from flowbench.plan import plan
from flowbench.training_noise import SCALES, TRAINING_NOISE, sampling_variance

ROOT = Path(__file__).parents[1]
# nfe_sweep's reference as it stood before its recomputation over three training seeds: one training
# seed per row, the tests below add seeds of their own
REFERENCE = ROOT / "tests" / "fixtures" / "nfe_sweep_one_seed.csv"
NFE_SWEEP = ROOT / "results" / "reference" / "nfe_sweep" / "leaderboard.csv"
FLOW_MAP_SEEDS = ROOT / "results" / "reference" / "flow_map_seeds" / "leaderboard.csv"
LEARNING_CURVES = ROOT / "results" / "reference" / "learning_curves" / "leaderboard.csv"
SMOKE = ROOT / "suites" / "smoke.yaml"
# The training noise of the synthetic seeds below, on each metric's scale: the spread of two flow_map
# training seeds that both learned (seeds 0 and 2 of an earlier flow_map_seeds reference).
NOISE = {"gen_ppl": 0.177, "entropy": 0.080, "unigram_kl": 0.063, "bigram_kl": 0.083, "mauve": 0.398,
         "val_loss": 0.012}
# mdlm's seed spread as a fraction of NOISE: its NFE-64 gen PPL moved 0.019 in log when retrained on an
# AMD EPYC CPU (docs/results.md, "Across CPUs": 27.53 -> 28.06), a tau of the order of 0.02
MDLM_SPREAD = 0.15


def read(path):
    with open(path, newline="") as f:
        return current_rows(list(csv.DictReader(f)))


def write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def moved(row, metric, shift):
    """The row with `metric` and its interval moved by `shift` on the metric's scale."""
    scale = SCALES[metric]
    for col in (metric, f"{metric}_lo", f"{metric}_hi"):
        if (x := _num(row.get(col))) is not None:
            if scale == "log":
                x = math.exp(math.log(x) + shift)
            elif scale == "logit" and 0 < x < 1:
                x = 1 / (1 + math.exp(-(math.log(x / (1 - x)) + shift)))
            elif scale == "identity":
                x += shift
            row[col] = repr(x)


def training_draw(rows, rng, *, spread):
    """Each trained row another draw of training and sampling: metrics moved by a normal of the
    row's sampling variance plus (spread * NOISE)^2; val_loss once per model."""
    model_shift = {}
    out = []
    for r in rows:
        r = dict(r)
        if r["denoiser"] == "trained":
            for m in SCALES:
                tau2 = (spread * NOISE[m]) ** 2
                moved(r, m, rng.normal(0, math.sqrt(tau2 + sampling_variance(m, r, _num))))
            shift = model_shift.setdefault(r["config_hash"], rng.normal(0, spread * NOISE["val_loss"]))
            r["val_loss"] = repr(float(r["val_loss"]) + shift)
        out.append(r)
    return out


KEYS = ("row_key", "seed", "config_hash")


def with_seeds(rows, *, spread, seeds=(1, 2), seed=0):
    """A reference with training seeds `seeds` beside each trained row's seed 0, and `retrain(rng)`:
    a run whose every model was trained again (another CPU type). Given seed 0, the distribution's
    centre is itself a draw around it; every other seed, the run's included, a draw around that."""
    rng = np.random.default_rng(seed)
    centre = {r["row_key"]: r for r in training_draw(rows, rng, spread=spread)}
    reference = list(rows)
    for s in seeds:
        trained = [r for r in rows if r["denoiser"] == "trained"]
        for first, r in zip(trained, training_draw([centre[r["row_key"]] for r in trained], rng, spread=spread)):
            r.update(seed=str(s), row_key=hashlib.sha1(f"{r['row_key']}{s}".encode()).hexdigest()[:12],
                     config_hash=f"{r['config_hash']}-{s}")
            centre[r["row_key"]] = centre[first["row_key"]]
            reference.append(r)

    def retrain(rng):
        return training_draw([{**centre[r["row_key"]], **{c: r[c] for c in KEYS}} for r in reference], rng,
                             spread=spread)
    return reference, retrain


@pytest.fixture(scope="module")
def three_seeds():
    return with_seeds(read(REFERENCE), spread=1.0)


def test_training_noise_only_is_within_noise(tmp_path, capsys, three_seeds):
    reference, retrain = three_seeds
    run = retrain(np.random.default_rng(1))  # a fresh clone on another CPU: every model trained again
    for r in run:
        r.update(eval_threads="1", cpu_isa="AVX2")
    ref = write(tmp_path / "ref" / "leaderboard.csv", reference)
    assert main(["compare", str(write(tmp_path / "run" / "leaderboard.csv", run)), str(ref)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("within noise")
    trained = sum(r["denoiser"] == "trained" for r in run)
    assert f"{len(run) - trained} identical; {trained} within noise" in out[-1]
    assert not any(line.startswith("one seed") for line in out)  # the reference has its seeds


def test_one_training_seed_says_so_and_falls_back(tmp_path, capsys):
    """Two close training seeds (both learned), measured: flow_map_seeds' seed 2 as a run of seed 0."""
    rows = read(FLOW_MAP_SEEDS)
    seed2 = {(r["sampler"], r["nfe"], r["sampler_params"]): r for r in rows if r["seed"] == "2"}
    ref = [r for r in rows if r["seed"] == "0"]
    run = [{**seed2[(r["sampler"], r["nfe"], r["sampler_params"])], "row_key": r["row_key"], "seed": "0"} for r in ref]
    args = [str(write(tmp_path / "run.csv", run)), str(write(tmp_path / "ref.csv", ref))]
    assert main(["compare", *args]) == 0
    out = capsys.readouterr().out.splitlines()
    notes = [line for line in out if line.startswith("one seed")]
    assert len(notes) == 1 and "one training seed for flow_map:" in notes[0]
    assert out[-1].startswith("within noise") and f"{len(run)} within noise" in out[-1]
    # no row is equal: each one passed its noise tests, none was waved through as identical
    assert all(pair.tests and pair.verdict == "within noise" for pair in compare(*args).pairs)


def test_the_recorded_training_noise_is_what_nfe_sweeps_seeds_give():
    """The fallback table is the committed nfe_sweep reference's measured spread, family by family,
    and pooled for families it does not train: a recomputed reference that moves it fails here."""
    measured = training_spreads(read(NFE_SWEEP))
    assert set(measured) == set(TRAINING_NOISE)
    for family, metrics in measured.items():
        assert set(metrics) == set(TRAINING_NOISE[family])
        for metric, spread in metrics.items():
            assert spread is not None and spread.df >= 2, (family, metric)
            assert math.sqrt(spread.tau2) == pytest.approx(TRAINING_NOISE[family][metric], rel=1e-3), (family, metric)


def test_a_sampler_one_step_short_is_inconsistent(tmp_path, capsys, three_seeds):
    reference, _ = three_seeds
    run = [dict(r) for r in reference]
    victim = next(r for r in run if r["family"] == "mdlm" and r["denoiser"] == "trained" and r["nfe"] == "64")
    victim["backbone_calls"] = repr(float(victim["backbone_calls"]) - 1)  # the metrics as before
    ref = write(tmp_path / "ref" / "leaderboard.csv", reference)
    assert main(["compare", str(write(tmp_path / "run" / "leaderboard.csv", run)), str(ref)]) == 1
    out = capsys.readouterr().out.splitlines()
    flagged = [line for line in out if line.startswith("inconsistent")]
    assert len(flagged) == 1 and victim["row_key"] in flagged[0] and "backbone_calls 64 -> 63" in flagged[0]
    assert out[-1].startswith("INCONSISTENT") and f"{len(run) - 1} identical; 1 inconsistent" in out[-1]


def test_a_model_trained_on_a_fraction_of_the_budget_is_inconsistent(tmp_path, capsys):
    """mdlm's rows with three seeds at mdlm's spread; a run whose model trained 2000 passes instead
    of 8000 (the budget below 8000 that learning_curves measured, on the same model fields): its
    validation loss and its NFE-16 and NFE-64 rows are those measured, the other rows a retraining."""
    reference, retrain = with_seeds([r for r in read(REFERENCE) if r["family"] == "mdlm"], spread=MDLM_SPREAD)
    ref = write(tmp_path / "ref.csv", reference)
    run = retrain(np.random.default_rng(2))
    assert compare(write(tmp_path / "retrained.csv", run), ref).verdict == "within noise"
    short = {r["nfe"]: r for r in read(LEARNING_CURVES)
             if r["family"] == "mdlm" and r["denoiser"] == "trained" and r["train_passes"] == "2000.0"}
    measured = [c for m in SCALES for c in (m, f"{m}_lo", f"{m}_hi")]
    replaced = set()
    for r in run:
        if r["denoiser"] == "trained":
            r["val_loss"] = short["64"]["val_loss"]
            if r["sampler"] == "ancestral" and r["num_samples"] == "256" and r["nfe"] in short:
                r.update({c: short[r["nfe"]][c] for c in measured})
                replaced.add(r["row_key"])
    assert main(["compare", str(write(tmp_path / "run.csv", run)), str(ref)]) == 1
    out = capsys.readouterr().out.splitlines()
    flagged = {line.split()[1]: line for line in out if line.startswith("inconsistent")}
    assert len(replaced) == 6 and all("gen_ppl" in flagged.get(key, "") for key in replaced)
    assert sum("val_loss" in line for line in flagged.values()) == 3  # one test per model and seed


def test_a_run_of_one_family_is_compared_on_that_family(tmp_path, capsys):
    rows = read(REFERENCE)
    mine = [r for r in rows if r["family"] == "mdlm"]  # what `run ... --only family=mdlm` writes
    assert main(["compare", str(write(tmp_path / "run" / "leaderboard.csv", mine)), str(REFERENCE)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert not any(line.startswith("missing") for line in out)
    assert out[0].startswith("scope") and "flow_map (65)" in out[0]
    assert out[-1].startswith(f"identical vs") and f"{len(mine)} identical" in out[-1]
    # a reference row of the family the run did run is still missing
    assert main(["compare", str(write(tmp_path / "short" / "leaderboard.csv", mine[1:])), str(REFERENCE)]) == 1
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("missing")][0].count(
        mine[0]["row_key"]) == 1


def test_an_oracle_row_is_exact(tmp_path, capsys):
    rows = read(REFERENCE)
    for r in rows:  # machine speed is reported, never a failure
        r["samples_per_s"] = str(2 * float(r["samples_per_s"]))
    write(tmp_path / "same" / "leaderboard.csv", rows)
    write(tmp_path / "ref" / "leaderboard.csv", read(REFERENCE))  # a reference given as its folder
    assert main(["compare", str(tmp_path / "same"), str(tmp_path / "ref")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("identical")

    altered = [dict(r) for r in rows]
    victim = next(r for r in altered if r["denoiser"] == "oracle" and r["nfe"] == "64")
    victim["gen_ppl"] = repr(float(victim["gen_ppl"]) * (1 + 1e-5))  # beyond rtol 1e-6
    write(tmp_path / "altered" / "leaderboard.csv", altered)
    assert main(["compare", str(tmp_path / "altered"), str(REFERENCE)]) == 1
    out = capsys.readouterr().out.splitlines()
    flagged = [line for line in out if line.startswith("inconsistent")]
    assert len(flagged) == 1 and victim["row_key"] in flagged[0] and "gen_ppl" in flagged[0]
    assert main(["compare", str(tmp_path / "altered"), str(REFERENCE), "--rtol", "1e-4"]) == 0


def test_an_oracle_rows_mauve_is_exact_only_on_the_same_cpu_kernels(tmp_path):
    rows = read(REFERENCE)
    env = {"cpu_isa": "AVX512", "eval_threads": "2", "torch": "2.13.0+cpu"}
    ref = [{**r, **env} for r in rows]
    run = [dict(r) for r in ref]
    victim = next(r for r in run if r["denoiser"] == "oracle" and r["nfe"] == "64")
    victim["mauve"] = repr(float(victim["mauve"]) - 0.01)  # well inside its sampling interval
    paths = write(tmp_path / "run.csv", run), write(tmp_path / "ref.csv", ref)
    assert compare(*paths).verdict == "inconsistent"
    for r in run:
        r["cpu_isa"] = "AVX2"
    assert compare(write(tmp_path / "run.csv", run), paths[1]).verdict == "within noise"


def test_an_empty_run_is_bad_input_not_identical(tmp_path, capsys):
    empty = tmp_path / "empty" / "leaderboard.csv"
    empty.parent.mkdir()
    empty.write_text(REFERENCE.read_text().splitlines()[0] + "\n")
    assert main(["compare", str(empty), str(REFERENCE)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(empty) in err[0] and "no rows" in err[0]


def test_compare_reports_missing_rows_and_matches_moved_keys_by_configuration(tmp_path):
    rows = read(REFERENCE)
    gone = next(i for i, r in enumerate(rows) if r["family"] == "mdlm")
    moved_keys = [dict(r) for i, r in enumerate(rows) if i != gone]  # one row is missing from the run
    moved_keys[0]["row_key"] = "0" * 12  # the code changed the key, not the configuration
    write(tmp_path / "run" / "leaderboard.csv", moved_keys)
    result = compare(tmp_path / "run", REFERENCE)
    assert not result.ok and not result.only_run
    assert [r["row_key"] for r in result.only_reference] == [rows[gone]["row_key"]]
    pair = next(p for p in result.pairs if p.run["row_key"] == "0" * 12)
    assert pair.by == "configuration" and pair.verdict == "inconsistent" and "row key" in pair.exact[0]
    assert all(p.verdict == "identical" for p in result.pairs if p is not pair)


def test_a_fresh_run_writes_its_own_results_and_reproduces_the_reference(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["--only", "family=mdlm", "--jobs", "1", "--no-progress"]
    assert main(["run", str(SMOKE), "--out", "results/reference/smoke", *args]) == 0
    reference = tmp_path / "results" / "reference" / "smoke" / "leaderboard.csv"
    before = reference.read_bytes()
    shutil.rmtree(tmp_path / "cache")  # a fresh machine: nothing trained, nothing cached
    capsys.readouterr()
    assert main(["run", str(SMOKE), *args]) == 0
    out = capsys.readouterr().out
    mine = tmp_path / "results" / "smoke" / "leaderboard.csv"
    expected = len(plan(load_suite(SMOKE), only={"family": "mdlm"}))
    rows = read(mine)
    assert len(rows) == expected  # every row computed again, none taken from the reference
    assert {(r["cpu_isa"], r["torch"]) for r in rows} == {(torch.backends.cpu.get_cpu_capability(), torch.__version__)}
    assert all(int(r["eval_threads"]) >= 1 for r in rows)
    assert reference.read_bytes() == before
    summary = [line for line in out.splitlines() if "results/reference/smoke" in line]
    assert summary and summary[0].startswith("identical") and f"{expected} identical" in summary[0]


def test_a_reference_marked_stale_is_named_so_not_compared_after_a_run(tmp_path, capsys, monkeypatch):
    from flowbench.__main__ import _reference_summary

    reference = tmp_path / "results" / "reference" / "smoke"
    reference.mkdir(parents=True)
    rows = read(REFERENCE)[:2]
    for r in rows:
        r["suite"] = "smoke"
    write(reference / "leaderboard.csv", rows)
    (reference / "STALE").write_text("row keys changed; recompute\n")
    run = tmp_path / "results" / "smoke" / "leaderboard.csv"
    write(run, rows)
    monkeypatch.chdir(tmp_path)
    _reference_summary(Path("results/smoke/leaderboard.csv"), only={})
    out = capsys.readouterr().out.strip()
    assert out.count("\n") == 0 and "awaits recomputation (row keys changed; recompute)" in out
