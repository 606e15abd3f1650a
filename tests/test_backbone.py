"""The shared backbone: positions, attention direction, conditioning."""
import pytest
import torch

from flowbench.backbone import Backbone, BackboneSpec, rotary_tables, rotate
from flowbench.config import BackboneConfig


def test_rotary_scores_depend_only_on_the_offset():
    L, Dh = 12, 8
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(Dh, generator=g), torch.randn(Dh, generator=g)
    cos, sin = rotary_tables(L, Dh, device="cpu")
    qr = rotate(q.expand(1, 1, L, Dh), cos, sin)[0, 0]  # the same vector at every position
    kr = rotate(k.expand(1, 1, L, Dh), cos, sin)[0, 0]
    scores = qr @ kr.T  # (L, L)
    for offset in range(-L + 1, L):
        diag = torch.diagonal(scores, offset)
        torch.testing.assert_close(diag, diag[:1].expand_as(diag), atol=1e-5, rtol=1e-5)
    assert scores[0].std() > 1e-2  # and it does depend on the offset
    torch.testing.assert_close(qr.norm(dim=-1), q.norm().expand(L))  # a rotation keeps the norm


@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_backbone_knows_positions(positions):
    """Without positions a transformer is permutation-equivariant: f(x[perm]) == f(x)[perm]."""
    torch.manual_seed(0)
    net = Backbone(spec=BackboneSpec(cond="none", input="tokens"), vocab_size=20, seq_len=8,
                   config=BackboneConfig(d_model=16, n_layers=2, n_heads=2, positions=positions)).eval()
    x = torch.randint(0, 20, (2, 8))
    perm = torch.randperm(8)
    with torch.no_grad():
        out, out_perm = net(x), net(x[:, perm])
    assert not torch.allclose(out[:, perm], out_perm, atol=1e-4)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_direction(causal):
    """Position 3's output depends on a later token iff the backbone is bidirectional."""
    torch.manual_seed(0)
    net = Backbone(spec=BackboneSpec(cond="t", input="simplex", causal=causal), vocab_size=10, seq_len=6,
                   config=BackboneConfig(d_model=16, n_layers=2, n_heads=2))
    for p in net.parameters():  # adaLN-Zero starts as the identity; perturb so every path is live
        p.data.add_(0.1 * torch.randn_like(p))
    x = torch.softmax(torch.randn(1, 6, 10), -1).requires_grad_()
    net(x, torch.tensor([0.5]))[0, 3].sum().backward()
    later = x.grad[0, 4:].abs().sum().item()
    earlier = x.grad[0, :3].abs().sum().item()
    assert earlier > 0
    assert (later == 0) if causal else (later > 0)


@pytest.mark.parametrize("inputs", ["tokens", "simplex"])
def test_residual_stream_stays_fp32_under_bf16_autocast(inputs):
    """Token and simplex inputs enter the blocks in one dtype: an nn.Embedding returns fp32 under
    autocast and the simplex nn.Linear bf16, and neither may decide the residual precision."""
    net = Backbone(spec=BackboneSpec(cond="t", input=inputs, self_cond=True), vocab_size=10, seq_len=8,
                   config=BackboneConfig(d_model=16, n_layers=1, n_heads=2))
    seen = []
    net.blocks[0].register_forward_hook(lambda m, args, out: seen.append((args[0].dtype, out.dtype)))
    x = torch.randint(0, 10, (2, 8)) if inputs == "tokens" else torch.rand(2, 8, 10).softmax(-1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = net(x, t=torch.rand(2), x1_hat=torch.rand(2, 8, 10))
    assert seen == [(torch.float32, torch.float32)]
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
