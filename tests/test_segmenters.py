"""Segmenters: the contract for every registered one, checkpoints, backbone weights,
the deterministic data source, and the segmentation losses."""

import numpy as np
import pytest
import torch
from PIL import Image

from s2rcli.models import build_task
from s2rcli.errors import S2RError
from s2rcli.losses.segmentation import cross_entropy, symmetric_cross_entropy
from s2rcli.models import create_model, get_model_entry, list_models
from s2rcli import checkpoint as ck
from s2rcli.models import model_from_checkpoint

SEGMENTERS = ["fastseg", "deeplabv3", "fcn"]


def test_registered_as_segmenters():
    assert set(SEGMENTERS) <= set(list_models("segmenter"))
    for name in SEGMENTERS:
        entry = get_model_entry(name)
        assert entry.kind == "segmenter" and entry.input_kind == "image"
        assert {"tiny", "paper"} <= set(entry.presets)
        assert entry.preset("tiny")["model"]["num_classes"] == 19


@pytest.mark.parametrize("name", SEGMENTERS)
def test_forward_backward_any_size(name):
    torch.manual_seed(0)
    net = create_model(name, preset="tiny", num_classes=5)
    assert net.num_classes == 5
    x = torch.rand(2, 3, 37, 53) * 2 - 1                       # odd size, not a multiple of the stride
    logits = net(x)
    assert logits.shape == (2, 5, 37, 53)
    loss = cross_entropy(logits, torch.randint(0, 5, (2, 37, 53)))
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert net.eval().predict(x[:1], size=(10, 12)).shape == (1, 10, 12)


def test_fastseg_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    net = create_model("fastseg", preset="tiny").eval()
    kwargs = get_model_entry("fastseg").model_kwargs("tiny")
    ckpt = ck.make_checkpoint(model="fastseg", model_kwargs=kwargs, label_space="cityscapes19",
                              state_dicts={"S": net.state_dict()})
    ck.save_checkpoint(ckpt, tmp_path / "seg.pt")
    again, loaded = model_from_checkpoint(tmp_path / "seg.pt")
    x = torch.rand(1, 3, 24, 40) * 2 - 1
    torch.testing.assert_close(again(x), net(x))
    assert loaded["label_space"] == "cityscapes19"
    with pytest.raises(S2RError, match="no segmenter weights"):
        again.load_s2r_state_dicts({"G": {}}, prefer_ema=True)


def test_backbone_weights_from_file_and_random(tmp_path):
    import torchvision

    net = create_model("fcn", preset="tiny")
    resnet = torchvision.models.resnet50(weights=None)
    with torch.no_grad():
        resnet.conv1.weight.fill_(0.125)
    torch.save(resnet.state_dict(), tmp_path / "resnet50.pth")
    net.load_backbone_weights(str(tmp_path / "resnet50.pth"))
    assert torch.all(net.net.backbone.conv1.weight == 0.125)
    before = net.net.backbone.layer1[0].conv1.weight.clone()
    net.load_backbone_weights("random")                        # keeps the current weights
    assert torch.equal(before, net.net.backbone.layer1[0].conv1.weight)
    with pytest.raises(S2RError, match="no such file"):
        net.load_backbone_weights(str(tmp_path / "missing.pth"))


def _write_folder(root, n=6, size=(16, 24), seed=0):
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        blocks = rng.integers(0, 4, size=(size[0] // 8, size[1] // 8)).astype(np.uint8)
        label = np.kron(blocks, np.ones((8, 8), np.uint8))       # spatially coherent regions
        label[0, :] = 255
        image = (np.stack([label * 60, 255 - label * 60, np.full(size, 100)], -1)).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"im{i}.png")
        Image.fromarray(label).save(root / "labels" / f"im{i}.png")
    return f"folder:{root}"


def _source(spec, **kw):
    from s2rcli.data.datasets import open_dataset
    from s2rcli.data.seg_source import SegmentationData

    args = dict(size=(16, 24), batch_size=4, seed=3, crop_scale=(0.5, 1.0))
    args.update(kw)
    return SegmentationData([open_dataset(spec)], **args)


def _take(source, n):
    it = iter(source)
    return [next(it) for _ in range(n)]


def test_data_source_is_deterministic_and_resumable(tmp_path):
    spec = _write_folder(tmp_path / "d")
    a = _take(_source(spec), 4)
    b = _take(_source(spec), 4)
    for x, y in zip(a, b):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
    assert a[0]["image"].shape == (4, 3, 16, 24) and a[0]["label"].dtype == torch.int64
    # positions 0..7 cover a 6-image epoch and start the next: every image appears in the first epoch
    assert a[0]["position"].tolist() == [0, 1, 2, 3] and a[1]["position"].tolist() == [4, 5, 6, 7]
    # resume: a fresh source restored to position 2 continues with batch 2
    resumed = _source(spec)
    first = _take(resumed, 2)
    state = resumed.state_dict()
    fresh = _source(spec)
    fresh.load_state_dict(state)
    nxt = _take(fresh, 2)
    assert torch.equal(nxt[0]["image"], a[2]["image"]) and torch.equal(nxt[1]["label"], a[3]["label"])
    assert torch.equal(first[1]["image"], a[1]["image"])
    # a different seed gives a different stream; ranks take disjoint batches
    other = _take(_source(spec, seed=4), 1)[0]
    assert not torch.equal(other["image"], a[0]["image"])
    rank1 = _take(_source(spec, rank=1, world_size=2), 2)
    assert rank1[0]["position"].tolist() == [4, 5, 6, 7] and rank1[1]["position"].tolist() == [12, 13, 14, 15]
    # a loader worker process yields the very same batches
    workers = _take(_source(spec, workers=1), 2)
    assert all(torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"]) for x, y in zip(workers, a))
    # labels stay valid class ids or 255 after crops and flips
    assert set(torch.cat([x["label"].flatten() for x in a]).unique().tolist()) <= {0, 1, 2, 3, 255}


def test_data_source_refuses_unlabelled(tmp_path):
    from s2rcli.data.datasets import open_dataset
    from s2rcli.data.seg_source import SegmentationData

    (tmp_path / "u").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "u" / "a.png")
    with pytest.raises(S2RError, match="has no labels"):
        SegmentationData([open_dataset(f"folder:{tmp_path / 'u'}")], size=(8, 8), batch_size=1)


def test_task_learns_a_tiny_problem(tmp_path):
    from s2rcli.device import DistInfo
    from s2rcli.training.loop import train

    spec = _write_folder(tmp_path / "d", n=4)
    from s2rcli.data.datasets import open_dataset

    torch.manual_seed(0)
    net = create_model("fastseg", preset="tiny", num_classes=4)
    cfg = {"model": "fastseg", "model_kwargs": {**get_model_entry("fastseg").model_kwargs("tiny"), "num_classes": 4},
           "seed": 0, "label_space": "cityscapes19", "data": {"size": [16, 24]},
           "train": {**get_model_entry("fastseg").preset("tiny")["train"], "steps": 40, "batch_size": 4,
                     "lr": 1e-2, "crop_scale": [1.0, 1.0]}}
    task = build_task(net, cfg, {"train": open_dataset(spec)}, DistInfo(), torch.device("cpu"))
    assert [p.name for p in task.phases] == ["S"] and task.model_kwargs["num_classes"] == 4
    losses = []

    class Record:
        def on_train_start(self, state): pass
        def on_step_end(self, state, terms): losses.append(float(terms["S/ce"]))
        def on_train_end(self, state, status): pass

    train(task, steps=40, device=torch.device("cpu"), config=cfg, observers=[Record()])
    assert np.mean(losses[-5:]) < 0.75 * np.mean(losses[:5])


def test_cross_entropy_ignores_255():
    logits = torch.zeros(1, 3, 2, 2, requires_grad=True)
    target = torch.tensor([[[0, 255], [255, 255]]])
    loss = cross_entropy(logits, target)
    assert loss.item() == pytest.approx(np.log(3))             # one pixel counts, uniform logits
    all_ignored = cross_entropy(logits, torch.full((1, 2, 2), 255))
    assert all_ignored.item() == 0.0 and all_ignored.requires_grad
    # logits at another resolution are brought to the label's
    assert cross_entropy(torch.zeros(1, 3, 1, 1), torch.zeros(1, 4, 4, dtype=torch.long)).item() == pytest.approx(np.log(3))


def test_symmetric_cross_entropy():
    torch.manual_seed(0)
    a, b = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    pa, pb = a.softmax(1), b.softmax(1)
    manual = -(pb * pa.log()).sum(1).mean() - (pa * pb.log()).sum(1).mean()
    assert symmetric_cross_entropy(a, b).item() == pytest.approx(manual.item(), rel=1e-5)
    assert symmetric_cross_entropy(a, b).item() == pytest.approx(symmetric_cross_entropy(b, a).item(), rel=1e-6)
    # equal predictions: twice the entropy, its minimum for that distribution
    same = symmetric_cross_entropy(a, a).item()
    assert same == pytest.approx(2 * -(pa * pa.log()).sum(1).mean().item(), rel=1e-5)
    with pytest.raises(ValueError):
        symmetric_cross_entropy(a, b[:, :3])


def test_iterating_segmentation_data_leaves_the_global_rng_alone():
    """Starting the loader must not draw from torch's global RNG, or a resumed run sees other dropout."""
    from s2rcli.data.seg_source import SegmentationData
    from toy_task import MemoryDataset

    data = SegmentationData([MemoryDataset(4, (32, 48))], size=(32, 48), batch_size=2, seed=3)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    next(iter(data))
    assert torch.equal(torch.rand(3), expected)
