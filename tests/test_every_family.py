"""Every registered family trains two steps and samples at NFE 1 and 2 with every sampler.

A family that cannot train or sample is caught the day it is registered."""
import pytest
import torch
from pydantic import ValidationError

from flowbench.config import BackboneConfig
from flowbench.registry import FAMILIES
from flowbench.worker import CallCounter


@pytest.mark.parametrize("name", FAMILIES.names())
def test_family_trains_and_samples(name, tiny_language):
    cls = FAMILIES.get(name)
    fam = cls(params=cls.Params(), vocab_size=tiny_language.vocab_size, seq_len=tiny_language.seq_len)
    model = fam.build_model(BackboneConfig(d_model=32, n_layers=1, n_heads=2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x1 = tiny_language.split("train", 8)
    for _ in range(2):
        loss = fam.loss(model, x1, generator=torch.Generator().manual_seed(0))
        assert loss.ndim == 0 and torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    for sampler, params_cls in cls.samplers.items():
        for nfe in (1, 2):
            try:
                params = params_cls(nfe=nfe)
                fam.check_sampler(sampler, params)
            except (ValueError, ValidationError):
                continue  # e.g. AR needs nfe = L, rk4 needs a multiple of 4
            counter = CallCounter(model)
            with torch.no_grad():
                x = fam.sample(counter, n=4, sampler=sampler, params=params,
                               generator=torch.Generator().manual_seed(0))
            assert x.shape == (4, tiny_language.seq_len) and x.dtype == torch.long
            assert 0 <= int(x.min()) and int(x.max()) < tiny_language.vocab_size
            assert 0 < counter.calls <= nfe if sampler != "kv_cache" else counter.calls == tiny_language.seq_len


@pytest.mark.parametrize("name", FAMILIES.names())
def test_training_phases_add_up_to_the_declared_cost(name):
    """The bench times each phase a family lists (flowbench/bench/cases.py): their shares of the
    steps sum to 1 and their share-weighted cost is the train_cost the trainer budgets with."""
    cls = FAMILIES.get(name)
    for params in (cls.Params(), *([cls.Params(distill_start=0.0)] if "distill_start" in cls.Params.model_fields else [])):
        fam = cls(params=params, vocab_size=16, seq_len=8)
        phases = fam.training_phases()
        assert sum(p.share for p in phases) == pytest.approx(1.0)
        assert sum(p.share * p.cost for p in phases) == pytest.approx(fam.train_cost)
        assert all(0.0 <= p.progress < 1.0 and p.cost >= 1.0 for p in phases)
