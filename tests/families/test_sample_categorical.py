"""sample_categorical: float64 inverse-CDF draws in memory-bounded chunks of rows."""
import pytest
import torch

import flowbench.families.base as base
from flowbench.families.base import sample_categorical

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def unchunked(logits, generator):
    """The reference: one float64 buffer for every row; the first id whose cumulative probability
    reaches u, counted by comparison (no searchsorted)."""
    p = logits.double().softmax(-1)
    u = 1 - torch.rand((*logits.shape[:-1], 1), dtype=torch.float64, generator=generator, device=logits.device)
    return (p.cumsum(-1) < u * p.sum(-1, keepdim=True)).sum(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 3, 7, 1000])
def test_chunked_draws_equal_one_unchunked_draw_on_the_cpu(dtype, rows):
    logits = (3 * torch.randn(5, 7, 301, generator=torch.Generator().manual_seed(0))).to(dtype)
    got = sample_categorical(logits, generator=torch.Generator().manual_seed(1), max_bytes=rows * 8 * 301)
    assert got.shape == (5, 7) and got.dtype == torch.long
    assert torch.equal(got, unchunked(logits, torch.Generator().manual_seed(1)))


def test_float64_working_set_stays_under_the_budget(monkeypatch):
    """A hub vocabulary: no float64 buffer above the budget, whatever n x L."""
    V, budget = 50257, 2**20
    sizes = []
    real_rand = torch.rand
    monkeypatch.setattr(base.torch, "rand", lambda *a, **kw: sizes.append(r := real_rand(*a, **kw)) or r)
    logits = torch.randn(4, 8, V)
    x = sample_categorical(logits, generator=torch.Generator().manual_seed(0), max_bytes=budget)
    assert x.shape == (4, 8)
    assert max(t.numel() * t.element_size() for t in sizes) <= budget
    assert sum(t.shape[0] for t in sizes) == 32  # every row drawn exactly once, one uniform each
    assert all(t.shape[1] == 1 for t in sizes)
    assert base.SAMPLE_BUDGET_BYTES == 256 * 2**20


def test_chunked_draws_follow_the_softmax_on_the_device():
    """A CUDA generator's chunks are not one draw's slices, so there the check is the law itself:
    the frequencies of 20000 draws (in chunks of 3 rows) match softmax(logits)."""
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    logits = probs.log().to(DEVICE).expand(20000, 4)
    x = sample_categorical(logits, generator=torch.Generator(device=DEVICE).manual_seed(0), max_bytes=3 * 8 * 4)
    assert x.device.type == DEVICE
    freq = torch.bincount(x.cpu(), minlength=4).double() / len(x)
    se = (probs * (1 - probs) / len(x)).sqrt()
    assert ((freq - probs).abs() < 4 * se).all(), freq


def test_zero_mass_is_never_drawn():
    """-inf logits (a nucleus cut, an impossible token) are never drawn, also at the ends of the row."""
    logits = torch.tensor([-torch.inf, 0.0, -torch.inf, 0.0, -torch.inf], dtype=torch.float64).expand(4000, 5)
    x = sample_categorical(logits, generator=torch.Generator().manual_seed(0))
    assert set(x.tolist()) == {1, 3}


@pytest.mark.parametrize("rows", [1, 4, 1000])
@pytest.mark.parametrize("top_p", [1.0, 0.7])
def test_a_masked_draw_is_the_full_draw_on_its_rows(rows, top_p):
    """only=mask draws just the masked rows, yet every row's uniform is consumed in order: the
    drawn ids, and the generator's state after, equal a full draw's (chunks that select nothing
    included); the other rows come back as -1."""
    logits = 3 * torch.randn(6, 9, 40, generator=torch.Generator().manual_seed(0))
    only = torch.rand(6, 9, generator=torch.Generator().manual_seed(1)) < 0.3
    only[2] = False                                   # whole chunks with nothing to draw
    g_full, g_part = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    full = sample_categorical(logits, generator=g_full, top_p=top_p, max_bytes=rows * 8 * 40)
    part = sample_categorical(logits, generator=g_part, top_p=top_p, only=only, max_bytes=rows * 8 * 40)
    assert torch.equal(part[only], full[only])
    assert (part[~only] == -1).all()
    assert torch.equal(g_part.get_state(), g_full.get_state())
    assert torch.equal(torch.rand(3, generator=g_part), torch.rand(3, generator=g_full))
