import pytest
import torch
from torch.nn import functional as F

from s2rcli.models.blocks.spade import SPADE, SPADEResBlock, haar_dwt, haar_idwt

from toy_task import one_torch_thread  # noqa: F401 (autouse: one intra-op thread)


def test_haar_round_trip_is_exact_and_orthonormal():
    x = torch.randn(2, 3, 6, 10, dtype=torch.float64)
    bands = haar_dwt(x)
    assert bands.shape == (2, 12, 3, 5)
    assert torch.allclose(haar_idwt(bands), x, atol=1e-12)
    assert torch.allclose(bands.pow(2).sum(), x.pow(2).sum())  # energy preserved


def test_haar_bands_of_one_block():
    # a b / c d = 1 2 / 3 4
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    ll, lh, hl, hh = haar_dwt(x).flatten().tolist()
    assert (ll, lh, hl, hh) == (5.0, -2.0, -1.0, 0.0)
    # a constant image has only the LL band
    flat = haar_dwt(torch.full((1, 2, 4, 4), 3.0))
    assert torch.all(flat[:, :2] == 6.0) and torch.all(flat[:, 2:] == 0.0)


def test_haar_rejects_odd_sizes_and_bad_band_counts():
    with pytest.raises(ValueError, match="even"):
        haar_dwt(torch.zeros(1, 3, 5, 8))
    with pytest.raises(ValueError):
        haar_idwt(torch.zeros(1, 6, 4, 4))


def test_spade_with_zero_modulation_is_the_plain_norm():
    spade = SPADE(4, cond_channels=3, hidden=8)
    for conv in (spade.gamma, spade.beta):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    x = torch.randn(2, 4, 8, 8)
    out = spade(x, torch.randn(2, 3, 16, 16))
    assert torch.allclose(out, F.instance_norm(x), atol=1e-5)


def test_spade_output_follows_the_condition_per_pixel():
    torch.manual_seed(0)
    spade = SPADE(4, cond_channels=2, hidden=8, kernel=1)  # 1x1: each pixel sees only its own condition
    x = torch.randn(1, 4, 8, 8)
    cond = torch.zeros(1, 2, 8, 8)
    cond[:, 0] = 1.0
    edited = cond.clone()
    edited[:, :, :, :4] = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)  # a label edit on the left half
    a, b = spade(x, cond), spade(x, edited)
    assert not torch.allclose(a[..., :4], b[..., :4])
    assert torch.allclose(a[..., 4:], b[..., 4:])


@pytest.mark.parametrize("cin,cout", [(8, 8), (8, 4)])
def test_spade_resblock_forward_backward(cin, cout):
    block = SPADEResBlock(cin, cout, cond_channels=5, hidden=8, spectral=True)
    x = torch.randn(2, cin, 6, 10, requires_grad=True)
    cond = torch.randn(2, 5, 12, 20)
    out = block(x, cond)
    assert out.shape == (2, cout, 6, 10)
    out.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert block.learned_skip == (cin != cout)
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
