import warnings

import pytest
import torch

import baselines.ar_gpt2 as ar
from flowbench.config import BackboneConfig
from flowbench.families.base import top_p_filter
from flowbench.worker import CallCounter


def test_kv_cache_decoding_matches_full_forward(monkeypatch):
    fam = ar.ARGPT2(params=ar.ARGPT2.Params(), vocab_size=20, seq_len=7)
    model = fam.build_model(BackboneConfig(d_model=32, n_layers=2, n_heads=2)).eval()
    seen = []
    real = ar.sample_categorical
    monkeypatch.setattr(ar, "sample_categorical", lambda logits, **kw: seen.append(logits) or real(logits, **kw))
    counter = CallCounter(model)
    x = fam.sample(counter, n=3, sampler="kv_cache", params=ar.KVCacheParams(),
                   generator=torch.Generator().manual_seed(0))
    assert counter.calls == 7 and x.shape == (3, 7) and int(x.max()) < 20  # BOS is never emitted
    bos = torch.full((3, 1), 20)
    full, _ = model(torch.cat([bos, x[:, :-1]], 1))
    cached = torch.stack(seen, 1)
    assert cached.shape == full.shape
    assert torch.allclose(cached.log_softmax(-1), full.double().log_softmax(-1), atol=1e-4)


def test_full_prefix_draws_what_the_cache_draws_without_warnings():
    """The cache is an optimisation: decoding without it re-reads the prefix and must draw the same
    tokens; neither path may hit a deprecated transformers argument."""
    fam = ar.ARGPT2(params=ar.ARGPT2.Params(), vocab_size=20, seq_len=7)
    model = fam.build_model(BackboneConfig(d_model=32, n_layers=2, n_heads=2)).eval()
    drawn = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for sampler in ("kv_cache", "full_prefix"):
            counter = CallCounter(model)
            drawn[sampler] = fam.sample(counter, n=5, sampler=sampler, params=ar.KVCacheParams(),
                                        generator=torch.Generator().manual_seed(3))
            assert counter.calls == 7
    assert torch.equal(drawn["kv_cache"], drawn["full_prefix"])


def test_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=torch.float64))
    kept = torch.isfinite(top_p_filter(logits.clone(), 0.7))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits.clone(), 1.0)).all()


def test_nfe_other_than_length_is_rejected():
    fam = ar.ARGPT2(params=ar.ARGPT2.Params(), vocab_size=20, seq_len=7)
    with pytest.raises(ValueError, match="seq_len=7"):
        fam.check_sampler("kv_cache", ar.KVCacheParams(nfe=4))
