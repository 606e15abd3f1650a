"""Temperature and top_p on every family's final categorical draw: the identity at 1 and 1,
sharper below 1, and rejected by a sampler that ends in an argmax."""
import pytest
import torch
from pydantic import ValidationError

from flowbench.config import BackboneConfig
from flowbench.families.base import sample_categorical
from flowbench.registry import FAMILIES

# family, sampler, its parameters that end in a categorical draw. A flow run to t = 1 ends on an
# all-but-certain posterior, which no temperature changes; t_end = 0.5 leaves it uncertain.
DRAWS = [("mdlm", "ancestral", {"nfe": 4}), ("dfm", "euler", {"nfe": 4}), ("ar_gpt2", "kv_cache", {})]
FLOWS = [("kl_flow", "ode", {"nfe": 2, "t_end": 0.2}, "sample"),
         ("dirichlet_flow", "ode", {"nfe": 2, "t_end": 0.2}, "multinomial")]


def test_sample_categorical_at_one_is_the_untempered_draw():
    logits = torch.randn(6, 9, 50, generator=torch.Generator().manual_seed(0))
    plain = sample_categorical(logits, generator=torch.Generator().manual_seed(1))
    assert torch.equal(plain, sample_categorical(logits, generator=torch.Generator().manual_seed(1),
                                                 temperature=1.0, top_p=1.0))
    cold = sample_categorical(logits, generator=torch.Generator().manual_seed(1), temperature=1e-4)
    assert torch.equal(cold, logits.argmax(-1))
    nucleus = sample_categorical(logits, generator=torch.Generator().manual_seed(1), top_p=1e-9)
    assert torch.equal(nucleus, logits.argmax(-1))


def _draw(micro_language, family, sampler, params, **tempering):
    V, L = micro_language.vocab_size, micro_language.seq_len
    cls = FAMILIES.get(family)
    fam = cls(params=cls.Params(), vocab_size=V, seq_len=L)
    if family == "ar_gpt2":  # no oracle: a fixed random network
        torch.manual_seed(0)
        model = fam.build_model(BackboneConfig(d_model=32, n_layers=1, n_heads=2)).eval()
    else:
        model = fam.oracle_model(micro_language.posterior)
    sp = cls.samplers[sampler](**params, **tempering)
    with torch.no_grad():
        return fam.sample(model, n=64, sampler=sampler, params=sp, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("family,sampler,params", DRAWS)
def test_temperature_one_reproduces_the_default_and_low_temperature_sharpens(micro_language, family, sampler, params):
    default = _draw(micro_language, family, sampler, params)
    assert torch.equal(default, _draw(micro_language, family, sampler, params, temperature=1.0, top_p=1.0))
    cold = _draw(micro_language, family, sampler, params, temperature=0.05)
    assert not torch.equal(cold, default)
    # fewer distinct sequences: the draw concentrates on modes
    assert len({tuple(r) for r in cold.tolist()}) < 0.75 * len({tuple(r) for r in default.tolist()})


@pytest.mark.parametrize("family,sampler,params,draw", FLOWS)
def test_a_cold_final_draw_of_a_flow_is_its_argmax_decode(micro_language, family, sampler, params, draw):
    """The trajectory is the same (same generator); only the final draw changes with temperature."""
    default = _draw(micro_language, family, sampler, {**params, "decode": draw})
    assert torch.equal(default, _draw(micro_language, family, sampler, {**params, "decode": draw}, temperature=1.0))
    argmax = _draw(micro_language, family, sampler, {**params, "decode": "argmax"})
    cold = _draw(micro_language, family, sampler, {**params, "decode": draw}, temperature=1e-3)
    assert (cold == argmax).float().mean() > 0.97
    assert (default == argmax).float().mean() < 0.9


def test_an_argmax_sampler_rejects_tempering():
    kl = FAMILIES.get("kl_flow").samplers["ode"]
    with pytest.raises(ValidationError, match="argmax"):
        kl(nfe=2, decode="argmax", temperature=0.5)
    euler = FAMILIES.get("flow_map").samplers["euler"]
    with pytest.raises(ValidationError, match="argmax"):
        euler(nfe=2, top_p=0.9)
    assert euler(nfe=2).temperature == 1.0
