"""The learning-rate schedule after the warmup: cosine (default), constant (MDLM's and DUO's
constant_warmup) or wsd (constant, then a decay over the last fraction of the budget)."""
import pytest
import torch

from flowbench.config import TrainConfig
from flowbench.trainer import lr_schedule


def lrs(schedule: str, total: int = 100, **kw) -> list[float]:
    config = TrainConfig(steps=total, lr=1.0, warmup_steps=10, schedule=schedule, **kw)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=config.lr)
    sched, out = lr_schedule(opt, config, total), []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_each_schedule_has_its_shape():
    cos, const, wsd = lrs("cosine"), lrs("constant"), lrs("wsd", decay_fraction=0.2)
    for lr in (cos, const, wsd):   # the same linear warmup
        assert lr[:10] == pytest.approx([k / 10 for k in range(10)])
    assert const[10:] == pytest.approx([1.0] * 90)
    assert wsd[10:80] == pytest.approx([1.0] * 70) and wsd[-1] < 0.01
    assert all(a >= b for a, b in zip(wsd[80:], wsd[81:]))
    assert cos[55] == pytest.approx(0.5, abs=0.02) and cos[-1] < 0.01   # half-way through the decay


def test_the_default_schedule_leaves_model_keys_as_they_were():
    """Keys of models trained before the schedule was a field stay valid; a change is a new key."""
    base = TrainConfig(passes=8000).key_fields()
    assert "schedule" not in base and "decay_fraction" not in base and "precision" not in base
    assert TrainConfig(passes=8000, schedule="constant").key_fields() == {**base, "schedule": "constant"}
    wsd = TrainConfig(passes=8000, schedule="wsd", decay_fraction=0.1).key_fields()
    assert wsd == {**base, "schedule": "wsd", "decay_fraction": 0.1}
