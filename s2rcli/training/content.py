"""Content preservation while training: does the translator keep what the labels say?

A segmenter trained on real labelled images (``s2r segment-eval train-and-test``)
segments the translations of a fixed set of synthetic preview images; its mIoU
against their synthetic labels (the FCN-score of the papers) is appended to
``RUN/content.jsonl`` every ``every`` steps, with per-class IoU. A recipe that
erases poles or people shows it here, long before a downstream test.

``s2r train ... --content-segmenter CKPT`` adds this observer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import load_checkpoint
from ..console import info
from ..data.labels import get_label_space
from ..data.pair_source import scale_crop_flip
from ..errors import S2RError
from ..metrics.segmentation import ConfusionMatrix
from ..models import get_model_entry, model_from_checkpoint
from .loop import Observer, TrainState
from .stats import MetricsLog


class ContentObserver(Observer):
    """Logs ``content_miou`` (and per-class IoU) of the preview translations to ``content.jsonl``.

    Args:
        run_dir: the run folder.
        segmenter: a segmenter checkpoint trained on real images, in the run's label space.
        every: steps between measurements (and once at the end); default the run's ``train.sample_every``.
        n: synthetic preview images (evenly spaced over the synthetic set, centre-cropped).
    """

    def __init__(self, run_dir: Path, segmenter: str | Path, every: int | None = None, n: int = 8):
        ckpt = load_checkpoint(segmenter)
        entry = get_model_entry(str(ckpt.get("model")))
        if entry.kind != "segmenter":
            raise S2RError(f"--content-segmenter {segmenter} is a {entry.kind} checkpoint, not a segmenter",
                           hint="train one on real images with `s2r segment-eval train-and-test`")
        self.segmenter, _ = model_from_checkpoint(ckpt)
        self.space = get_label_space(ckpt.get("label_space") or "cityscapes19")
        self.log = MetricsLog(Path(run_dir) / "content.jsonl")
        self.every, self.n = (max(1, int(every)) if every else None), int(n)
        self.first: float | None = None
        self.last: float | None = None

    def on_train_start(self, state: TrainState) -> None:
        if self.every is None:
            self.every = max(1, int(state.config["train"].get("sample_every", 500)))
        task = state.task
        synthetic = getattr(task.data, "synthetic", None)
        size = getattr(task.data, "size", None)
        if synthetic is None or size is None or not synthetic.has_labels:
            raise S2RError("--content-segmenter needs a translation run whose synthetic set has labels")
        if state.config.get("label_space") not in (None, self.space.name):
            raise S2RError(f"the content segmenter works in {self.space.name}, the run in {state.config['label_space']}",
                           hint="train the segmenter in the run's label space")
        picks = np.unique(np.linspace(0, len(synthetic) - 1, self.n).round().astype(int))
        images, labels = [], []
        for i in picks:
            image, label = scale_crop_flip(synthetic.read_image(int(i)), synthetic.read_label(int(i)), size, None)
            images.append(torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float() / 127.5 - 1)
            labels.append(np.ascontiguousarray(label))
        self.images, self.labels = torch.stack(images), labels
        self.segmenter.to(state.device).eval()
        if state.dist.is_main:
            self.log.truncate_after(state.step)

    @torch.no_grad()
    def measure(self, state: TrainState) -> dict[str, Any]:
        model = state.task.model
        was_training = model.training
        model.eval()
        try:
            x = self.images.to(state.device)
            if get_model_entry(state.task.model_name).input_kind == "image":
                y = model.translate(x, "a2b")
            else:  # a label-to-image model: generate from the labels, one fixed noise draw
                labels = torch.from_numpy(np.stack(self.labels).astype(np.int64)).to(state.device)
                y = model.generate(labels, generator=torch.Generator(device=state.device).manual_seed(0))
            pred = self.segmenter(y.float()).argmax(1).cpu().numpy()
        finally:
            model.train(was_training)
        cm = ConfusionMatrix(self.space.num_classes)
        for p, label in zip(pred, self.labels):
            cm.update(p, label)
        scores = cm.scores(self.space.class_names)
        return {"step": state.step, "content_miou": scores.miou, "per_class_iou": scores.to_dict()["per_class_iou"]}

    def on_step_end(self, state: TrainState, terms: dict[str, torch.Tensor]) -> None:
        if state.step % self.every == 0 or state.step == state.total_steps:
            record = self.measure(state)
            self.first = record["content_miou"] if self.first is None else self.first
            self.last = record["content_miou"]
            if state.dist.is_main:
                self.log.append(record)

    def on_train_end(self, state: TrainState, status: str) -> None:
        if self.last is not None and state.dist.is_main:
            info(f"content preservation on the preview batch: mIoU {100 * self.last:.1f}% at step {state.step} "
                 f"(first measured {100 * self.first:.1f}%); per step in {self.log.path}")
