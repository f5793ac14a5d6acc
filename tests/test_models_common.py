"""Every registered model, at its tiny preset: forward and backward, right shapes, no NaN.

Driven by the registry, so a new model file is covered without editing this test.
Translation models are exercised through their real training task (``make_task``
then ``task.loss`` for each phase), so the loss objects are covered too.
"""

import pytest
import torch

from s2rcli.models import build_task
from s2rcli.models import create_model, get_model_entry, list_models
from s2rcli.training.config import preset_defaults
from s2rcli.device import DistInfo

from toy_task import MemoryDataset, one_torch_thread  # noqa: F401 (autouse fixture)

CPU = torch.device("cpu")


def _preset(entry) -> str | None:
    return "tiny" if "tiny" in entry.presets else None


def _finite_grads(module: torch.nn.Module) -> int:
    count = 0
    for p in module.parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all()
            count += 1
    return count


@pytest.mark.parametrize("name", list_models(kind="translation"))
def test_translation_model_trains_one_step_of_each_phase(name):
    entry = get_model_entry(name)
    torch.manual_seed(0)
    cfg = preset_defaults(name, _preset(entry) or "tiny")
    cfg["train"]["vgg_weights"] = "random"  # never download in tests
    cfg["data"].update(synthetic="mem", real="mem")
    h, w = cfg["data"]["size"]
    space = cfg["label_space"] or "cityscapes19"
    data = {"synthetic": MemoryDataset(2, (h + 8, w + 8), seed=1, space=space),
            "real": MemoryDataset(2, (h + 8, w + 8), seed=2, space=space)}
    model = create_model(name, **cfg["model_kwargs"])
    task = build_task(model, cfg, data, DistInfo(), CPU)
    assert [p.name for p in task.phases], "a task needs at least one phase"
    batch = next(iter(task.data))
    for phase in task.phases:
        for net in task.nets.values():
            net.zero_grad(set_to_none=True)
        out = task.loss(phase.name, batch, 0)
        assert out["loss"].ndim == 0 and torch.isfinite(out["loss"]), (phase.name, out)
        out["loss"].backward()
        assert sum(_finite_grads(task.nets[n]) for n in phase.nets) > 0, phase.name

    model.eval()
    with torch.no_grad():
        if entry.input_kind == "image":
            x = torch.rand(1, 3, h, w) * 2 - 1
            y = model.translate(x, "a2b")
            assert y.shape == x.shape and torch.isfinite(y).all()
            assert y.abs().max() <= 1.0 + 1e-5
        else:
            labels = torch.randint(0, model.num_classes, (1, h, w))
            y = model.generate(labels, generator=torch.Generator().manual_seed(0))
            assert y.shape == (1, 3, h, w) and torch.isfinite(y).all()
    assert isinstance(model.stride, int) and h % model.stride == 0 and w % model.stride == 0


@pytest.mark.parametrize("name", list_models(kind="segmenter"))
def test_segmenter_forward_backward(name):
    entry = get_model_entry(name)
    torch.manual_seed(0)
    model = create_model(name, preset=_preset(entry))
    model.train()
    x = torch.rand(2, 3, 64, 96) * 2 - 1
    logits = model(x)
    assert logits.shape == (2, model.num_classes, 64, 96)
    assert torch.isfinite(logits).all()
    logits.mean().backward()
    assert _finite_grads(model) > 0


def test_every_model_has_tiny_and_paper_presets():
    for name in list_models():
        entry = get_model_entry(name)
        assert {"tiny", "paper"} <= set(entry.presets), name
