"""A checkpoint is trusted by what it saved, not by its file name: one model's checkpoint at
another model's path is refused on every load (resume, reuse, evaluation) in one line naming both;
checkpoints are named by the full model key, and an older cache's short names are still read."""
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from flowbench import worker
from flowbench.config import load_suite
from flowbench.plan import ModelSpec, make_corpus, plan
from flowbench.trainer import CheckpointError, atomic_save, load_checkpoint
from flowbench.worker import checkpoint_path, train_model

SMOKE = Path(__file__).parents[1] / "suites" / "smoke.yaml"


@pytest.fixture
def points():
    """Trained smoke-suite points of three models (2 steps each): mdlm at seeds 0 and 1 (the same
    architecture: one's weights load into the other without complaint) and kl_flow."""
    trained = [p for p in plan(load_suite(SMOKE)) if p.denoiser == "trained"]
    found = {family: next(p for p in trained if p.model.family == family) for family in ("mdlm", "kl_flow")}
    found["mdlm-seed1"] = replace(found["mdlm"], model=replace(found["mdlm"].model, seed=1))
    return found


def refused(call, *, path, saved, wanted) -> str:
    with pytest.raises(CheckpointError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert saved.label in message and wanted.label in message, message
    return message


@pytest.mark.parametrize("other, differ", [("mdlm-seed1", "seed"), ("kl_flow", "family")])
@pytest.mark.parametrize("done", [True, False], ids=["finished", "mid-training"])
def test_another_models_checkpoint_is_refused_on_every_load(points, done, other, differ):
    mdlm, wanted = points["mdlm"].model, points[other].model
    train_model(mdlm, progress=False)
    state = load_checkpoint(checkpoint_path(mdlm))
    state["done"] = done  # mid-training: the resume path; finished: the reuse path
    atomic_save(state, checkpoint_path(wanted))  # copied or renamed by hand
    message = refused(lambda: train_model(wanted, progress=False), path=checkpoint_path(wanted),
                      saved=mdlm, wanted=wanted)
    assert f"differ in {differ}" in message  # says how
    if done:  # evaluation loads the checkpoint itself
        suite = wanted.suite
        corpus = make_corpus(suite, cache_dir=worker.cache_root())
        refused(lambda: worker.evaluate(points[other], corpus=corpus, judge=None, device=torch.device("cpu"),
                                        suite=suite),
                path=checkpoint_path(wanted), saved=mdlm, wanted=wanted)
    assert load_checkpoint(checkpoint_path(wanted))["meta"]["label"] == mdlm.label  # left as it was


def test_models_whose_keys_share_a_prefix_get_their_own_checkpoints(points, monkeypatch):
    spec = points["mdlm"].model
    seed0, seed1 = (ModelSpec(family="mdlm", params=spec.params, train=spec.train, seed=s, suite=spec.suite)
                    for s in (0, 1))
    fake_keys = {0: "abcdef111111", 1: "abcdef222222"}  # 24 bits in common
    monkeypatch.setattr(ModelSpec, "key", property(lambda s: fake_keys[s.seed]))
    assert checkpoint_path(seed0).name == "mdlm-abcdef111111.pt"
    assert checkpoint_path(seed1).name == "mdlm-abcdef222222.pt"
    train_model(seed0, progress=False)
    train_model(seed1, progress=False)  # trains its own model, not seed 0's
    assert load_checkpoint(checkpoint_path(seed0))["meta"]["seed"] == 0
    assert load_checkpoint(checkpoint_path(seed1))["meta"]["seed"] == 1


def legacy_path(spec) -> Path:
    """Where an older flowbench saved a model: family and the key's first 6 hex characters."""
    return checkpoint_path(spec).with_name(f"{spec.family}-{spec.key[:6]}.pt")


def test_an_older_caches_checkpoint_of_this_model_is_moved_and_used(points):
    mdlm = points["mdlm"].model
    train_model(mdlm, progress=False)
    path = checkpoint_path(mdlm)
    assert path.name == f"mdlm-{mdlm.key}.pt" and len(mdlm.key) == 12
    old = legacy_path(mdlm)
    path.rename(old)
    kept = old.read_bytes()
    assert train_model(mdlm, progress=False)["step"] == 2
    assert not old.exists() and path.read_bytes() == kept  # moved, found done, not trained again


def test_an_older_caches_checkpoint_of_another_model_is_never_used(points):
    mdlm, kl_flow = points["mdlm"].model, points["kl_flow"].model
    train_model(kl_flow, progress=False)
    shutil.move(checkpoint_path(kl_flow), legacy_path(mdlm))  # a short name another model's file has
    kept = legacy_path(mdlm).read_bytes()
    train_model(mdlm, progress=False)  # trains its own
    assert legacy_path(mdlm).read_bytes() == kept
    assert load_checkpoint(checkpoint_path(mdlm))["meta"]["label"] == mdlm.label
