"""The bench's training floor: a family's necessary own work (`Family.training_floor_work`) timed
beside the bare backbone step, reported as `floor_ratio_to_bare`; a family or phase that declares
no such work reports no floor (no timing assertions)."""
import math

import pandas as pd
import pytest
import torch
import yaml

from flowbench.bench import run_bench
from flowbench.families.base import Family
from flowbench.registry import FAMILIES

TINY = {
    "name": "tiny", "backbone": {"d_model": 16, "n_layers": 1, "n_heads": 2}, "seq_len": 6, "vocab_size": 10,
    "train_batch": 4, "train_steps": 1, "repeats": 2, "min_run_s": 0.0, "measures": ["train"],
    "entries": [
        {"family": "ar_gpt2", "sampler": "kv_cache"},
        {"family": "mdlm", "sampler": "ancestral", "nfe": [1]},
        {"family": "dirichlet_flow", "sampler": "ode", "nfe": [1]},
        {"family": "kl_flow", "sampler": "ode", "nfe": [1]},
        {"family": "flow_map", "sampler": "flow_map", "nfe": [1]},
        {"family": "flow_map", "params": {"distill": "lsd"}, "sampler": "flow_map", "nfe": [1], "label": "fm_lsd"},
    ],
}


def test_floor_is_reported_beside_the_measured_ratio_and_left_empty_where_undeclared(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(TINY))
    t = pd.read_csv(run_bench(str(path), out=tmp_path / "out", progress=False))
    train = t[t.measure == "train"].set_index(["contestant", "phase"])
    declared = [("mdlm/ancestral", "train"), ("dirichlet_flow/ode", "train"), ("kl_flow/ode", "train"),
                ("flow_map/flow_map", "anchor"), ("flow_map/flow_map", "distill"), ("flow_map/flow_map", "all"),
                ("fm_lsd", "anchor")]
    for key in declared:
        row = train.loc[key]
        for col in ("floor_ratio_to_bare", "backbone_ratio_to_bare", "floor_seconds"):
            assert math.isfinite(row[col]) and row[col] > 0, (key, col)
        assert math.isfinite(row.pass_ratio_to_bare), key
    # ar_gpt2 declares no own work; flow_map's lsd distillation declares none, so neither does its whole
    for key in [("ar_gpt2/kv_cache", "train"), ("ar_gpt2/kv_cache", "all"), ("fm_lsd", "distill"), ("fm_lsd", "all")]:
        for col in ("floor_ratio_to_bare", "backbone_ratio_to_bare", "floor_seconds"):
            assert math.isnan(train.loc[key][col]), (key, col)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "floor_ratio_to_bare" in summary and "backbone_ratio_to_bare" in summary and "floor_ms" in summary


def test_a_bare_step_of_a_conditioned_simplex_backbone_feeds_it_what_it_reads():
    """The floor's bare step of a family's own backbone: a simplex point and the times its
    conditioning needs; the default stays token ids, unconditioned."""
    from flowbench.bare_step import BareStep
    from flowbench.config import BackboneConfig
    from flowbench.families.base import BackboneSpec

    config = BackboneConfig(d_model=16, n_layers=1, n_heads=2)
    step = BareStep(config, batch_size=3, seq_len=4, vocab_size=5, spec=BackboneSpec(cond="st", input="simplex"))
    assert step.input.shape == (3, 4, 5) and torch.allclose(step.input.sum(-1), torch.ones(3, 4))
    assert set(step.times) == {"s", "t"}
    assert step.seconds() > 0
    plain = BareStep(config, batch_size=3, seq_len=4, vocab_size=5)
    assert plain.input is plain.x and plain.times == {}


def test_a_family_without_the_hook_declares_no_floor():
    cls = FAMILIES.get("ar_gpt2")
    assert cls.training_floor_work is Family.training_floor_work
    family = cls(params=cls.Params(), vocab_size=10, seq_len=6)
    phase, = family.training_phases()
    assert family.training_floor_work(phase=phase, x1=torch.zeros(2, 6, dtype=torch.long),
                                      generator=torch.Generator()) is None


def _count_calls(monkeypatch, owner, names: list[str], counts: dict[str, int]) -> None:
    for name in names:
        counts[name] = 0
        original = getattr(owner, name)

        def counted(*args, _name=name, _original=original, **kw):
            counts[_name] += 1
            return _original(*args, **kw)

        monkeypatch.setattr(owner, name, counted)


@pytest.mark.parametrize("phase_name, expected", [
    ("anchor", {"interpolate": 1, "softmax_input": 1, "psd_target": 0, "soft_target_kl": 0}),
    # the path at s, the maps of x_s and of the jump X_{s,u}, the target, the KL
    ("distill", {"interpolate": 2, "softmax_input": 3, "psd_target": 1, "soft_target_kl": 1}),
])
def test_flow_map_floor_runs_its_own_functions_per_phase(monkeypatch, phase_name, expected):
    from flowbench.families import flow_map as module

    counts: dict[str, int] = {}
    _count_calls(monkeypatch, module, ["softmax_input", "soft_target_kl"], counts)
    _count_calls(monkeypatch, module.FlowMap, ["interpolate", "psd_target"], counts)
    family = module.FlowMap(params=module.FlowMapParams(), vocab_size=10, seq_len=6)
    phase = {p.name: p for p in family.training_phases()}[phase_name]
    x1 = torch.randint(10, (3, 6), generator=torch.Generator().manual_seed(0))
    work = family.training_floor_work(phase=phase, x1=x1, generator=torch.Generator().manual_seed(1))
    work()
    assert counts == expected


def test_dirichlet_floor_draws_the_prior_and_reads_the_posterior_input_of_the_path():
    """The floor's output is the posterior input the network would read: a distribution per
    position that, late on the path (t > 1/2, uniform times), puts its mass on the data token."""
    cls = FAMILIES.get("dirichlet_flow")
    family = cls(params=cls.Params(time_warp="uniform"), vocab_size=10, seq_len=6)
    x1 = torch.randint(10, (64, 6), generator=torch.Generator().manual_seed(0))
    phase, = family.training_phases()
    post = family.training_floor_work(phase=phase, x1=x1, generator=torch.Generator().manual_seed(1))()
    assert post.shape == (64, 6, 10) and post.dtype == torch.float32
    assert torch.allclose(post.sum(-1), torch.ones(64, 6))
    late = family.warp.to_t(torch.rand(64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)) > 0.5
    assert late.any() and (post[late].argmax(-1) == x1[late]).all()
