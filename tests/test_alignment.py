import pytest
import torch

from s2rcli.losses.alignment import (
    PatchPerceptualLoss,
    check_patchable,
    patchify,
    perceptual_distance,
    unit_normalize,
    unpatchify,
)

from toy_task import one_torch_thread  # noqa: F401 (autouse: one intra-op thread)


@pytest.mark.parametrize("patches,size", [(4, (8, 12)), (16, (8, 12)), (4, (6, 10)), (9, (9, 6)), (1, (5, 7))])
def test_patchify_splits_and_restacks_exactly(patches, size):
    k = int(patches ** 0.5)
    x = torch.randn(3, 2, *size)
    p = patchify(x, patches)
    h, w = size[0] // k, size[1] // k
    assert p.shape == (3 * patches, 2, h, w)
    for b in range(3):
        for i in range(k):
            for j in range(k):
                assert torch.equal(p[b * patches + i * k + j], x[b, :, i * h:(i + 1) * h, j * w:(j + 1) * w])
    assert torch.equal(unpatchify(p, patches), x)


def test_patchify_rejects_what_does_not_split():
    with pytest.raises(ValueError, match="multiples of 2"):
        patchify(torch.zeros(1, 3, 63, 128), 4)
    with pytest.raises(ValueError, match="multiples of 4"):
        patchify(torch.zeros(1, 3, 34, 40), 16)
    with pytest.raises(ValueError, match="perfect square"):
        patchify(torch.zeros(1, 3, 32, 32), 8)
    with pytest.raises(ValueError, match="whole number"):
        unpatchify(torch.zeros(6, 3, 4, 4), 4)
    check_patchable(64, 128, 16)  # fine


def test_unit_normalize_and_distance_values():
    f = torch.randn(2, 5, 3, 4) * 7
    assert torch.allclose(unit_normalize(f).norm(dim=1), torch.ones(2, 3, 4), atol=1e-5)
    a = torch.zeros(1, 2, 3, 3)
    a[:, 0] = 4.0
    b = torch.zeros(1, 2, 3, 3)
    b[:, 1] = 0.5
    # orthogonal unit vectors: squared distance 2 at every position, per layer; weights scale it
    assert perceptual_distance([a, a], [b, b]).item() == pytest.approx(4.0)
    assert perceptual_distance([a, a], [b, b], weights=[1.0, 0.5]).item() == pytest.approx(3.0)
    assert perceptual_distance([a], [2 * a]).item() == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def vgg():
    from s2rcli.models.sis.task import frozen_vgg

    return frozen_vgg("vgg16", ("relu1_2", "relu2_2"), "random", "cpu")  # shared with test_sis (built once)


def _scene(h=32, w=64):
    """A smooth image: a few soft blobs on a gradient."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    img = torch.stack([xx, yy, xx * yy]) * 0.3
    for cx, cy, c in [(-0.5, 0.2, 0), (0.4, -0.3, 1), (0.1, 0.5, 2)]:
        img[c] += torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.05)
    return img.clamp(-1, 1)[None]


@pytest.mark.parametrize("patches", [1, 4, 16])
def test_alignment_zero_for_identical_and_grows_with_shift(vgg, patches):
    loss = PatchPerceptualLoss(vgg, patches=patches)
    x = _scene()
    assert loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)
    values = [loss(x, torch.roll(x, shifts=s, dims=-1)).item() for s in (1, 3, 8)]
    assert 0 < values[0] < values[1] < values[2], values


def test_alignment_gradient_reaches_only_the_generated_image(vgg):
    loss = PatchPerceptualLoss(vgg, patches=4)
    x = _scene().requires_grad_(True)
    target = torch.roll(_scene(), 4, -1).requires_grad_(True)
    loss(x, target).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert target.grad is None
    with pytest.raises(ValueError, match="differ in shape"):
        loss(x, target[..., :32])


def test_patch_loss_is_the_mean_of_whole_image_losses_on_each_patch(vgg):
    x = _scene(32, 64)
    y = torch.roll(x, 3, -2)
    patched = PatchPerceptualLoss(vgg, patches=4)(y, x).item()
    whole = PatchPerceptualLoss(vgg, patches=1)
    per_patch = [whole(y[..., i:i + 16, j:j + 32], x[..., i:i + 16, j:j + 32]).item() for i in (0, 16) for j in (0, 32)]
    assert patched == pytest.approx(sum(per_patch) / 4, rel=1e-5)
    assert patched != pytest.approx(whole(y, x).item(), rel=1e-3)  # the patches see no context across their borders
