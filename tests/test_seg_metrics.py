"""Segmentation metrics: values by hand, NaN rules, subsets, and agreement with cityscapesscripts."""

import copy
import math

import numpy as np
import pytest
import torch
from PIL import Image

from s2rcli.metrics.segmentation import (SYNTHIA13_TRAIN_IDS, SYNTHIA16_TRAIN_IDS, ConfusionMatrix, confusion_matrix,
                                         default_subsets, scores_from_confusion, subset_indices)


def test_confusion_matrix_counts_and_ignores_255():
    target = np.array([[0, 0, 1], [2, 255, 1]])
    pred = np.array([[0, 1, 1], [2, 0, 0]])
    cm = confusion_matrix(pred, target, 3)
    expected = np.array([[1, 1, 0],   # gt 0: one right, one called 1
                         [1, 1, 0],   # gt 1: one right, one called 0
                         [0, 0, 1]])  # gt 2: right; the 255 pixel is not counted
    np.testing.assert_array_equal(cm, expected)
    assert cm.dtype == np.int64 and cm.sum() == 5
    # tensors work too, and give the same matrix
    np.testing.assert_array_equal(confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), 3), expected)


def test_scores_by_hand():
    cm = np.array([[3, 1, 0], [0, 2, 2], [0, 0, 0]])  # class 2 never in ground truth, predicted twice
    s = scores_from_confusion(cm, ["a", "b", "c"])
    assert s.iou[0] == pytest.approx(3 / 4)
    assert s.iou[1] == pytest.approx(2 / 5)
    assert s.iou[2] == 0.0                    # only predicted: IoU 0, and it counts in the mean
    assert s.miou == pytest.approx((3 / 4 + 2 / 5 + 0) / 3)
    assert s.pixel_accuracy == pytest.approx(5 / 8)
    assert s.class_accuracy[0] == pytest.approx(3 / 4) and s.class_accuracy[1] == pytest.approx(2 / 4)
    assert math.isnan(s.class_accuracy[2])    # no ground truth: no recall
    assert s.mean_class_accuracy == pytest.approx((3 / 4 + 2 / 4) / 2)


def test_absent_class_is_nan_and_excluded():
    cm = np.zeros((3, 3), np.int64)
    cm[0, 0], cm[1, 1] = 10, 5
    s = scores_from_confusion(cm, ["a", "b", "c"])
    assert math.isnan(s.iou[2])
    assert s.miou == 1.0
    d = s.to_dict()
    assert d["per_class_iou"] == {"a": 1.0, "b": 1.0, "c": None}
    assert d["miou"] == 1.0 and d["num_pixels"] == 15


def test_accumulator_and_out_of_range():
    acc = ConfusionMatrix(4)
    acc.update(np.array([0, 1, 2]), np.array([0, 1, 3]))
    acc.update(np.array([3]), np.array([3]))
    assert acc.matrix.sum() == 4 and acc.matrix[3, 2] == 1 and acc.matrix[3, 3] == 1
    with pytest.raises(ValueError, match="predicted class ids"):
        acc.update(np.array([7]), np.array([0]))
    with pytest.raises(ValueError, match="label values"):
        acc.update(np.array([0]), np.array([9]))
    with pytest.raises(ValueError, match="shape"):
        acc.update(np.zeros(3), np.zeros(4))


def test_synthia_subsets():
    assert subset_indices("synthia16") == list(SYNTHIA16_TRAIN_IDS)
    assert subset_indices("synthia13") == list(SYNTHIA13_TRAIN_IDS)
    assert default_subsets("cityscapes19") == {"miou16": list(SYNTHIA16_TRAIN_IDS), "miou13": list(SYNTHIA13_TRAIN_IDS)}
    assert default_subsets("cityscapes34") == {}
    # a model perfect on everything but truck (14): mIoU16 ignores truck, mIoU19 does not
    cm = np.eye(19, dtype=np.int64) * 100
    cm[14, 14], cm[14, 0] = 0, 100
    s = scores_from_confusion(cm, subsets=default_subsets("cityscapes19"))
    assert s.subsets["miou16"] == pytest.approx((15 + 100 / 200) / 16)  # road's IoU drops to 1/2
    assert s.miou == pytest.approx((17 + 0.5 + 0) / 19)
    assert s.subsets["miou13"] == pytest.approx((12 + 0.5) / 13)


def _train_to_label_ids():
    from cityscapesscripts.helpers.labels import trainId2label

    lut = np.zeros(256, np.uint8)  # 255 (ignore) -> 0 (unlabeled, ignored in evaluation)
    for train_id in range(19):
        lut[train_id] = trainId2label[train_id].id
    return lut


def test_agrees_with_cityscapesscripts(tmp_path):
    import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as cs

    rng = np.random.default_rng(0)
    lut = _train_to_label_ids()
    preds, gts, ours = [], [], ConfusionMatrix(19)
    for k in range(3):
        gt = rng.integers(0, 17, size=(12, 20)).astype(np.uint8)   # motorcycle 17, bicycle 18 never in the ground truth
        gt[rng.random(gt.shape) < 0.1] = 255
        gt[gt == 5] = 6                                              # pole never in the ground truth ...
        pred = np.where(rng.random(gt.shape) < 0.6, gt, rng.integers(0, 18, size=gt.shape)).astype(np.uint8)
        pred[pred == 255] = 0
        pred[pred == 5] = 7                                          # ... nor predicted: NaN on both sides
        ours.update(pred, gt)
        gts.append(tmp_path / f"city_{k:06d}_000019_gtFine_labelIds.png")
        preds.append(tmp_path / f"pred_{k}.png")
        Image.fromarray(lut[gt]).save(gts[-1])
        Image.fromarray(lut[pred]).save(preds[-1])

    args = copy.copy(cs.args)
    args.evalInstLevelScore, args.quiet, args.JSONOutput = False, True, False
    args.exportFile = str(tmp_path / "result.json")
    result = cs.evaluateImgLists([str(p) for p in preds], [str(p) for p in gts], args)

    from s2rcli.data.labels import get_label_space

    names = get_label_space("cityscapes19").class_names
    scores = ours.scores(names)
    for name, iou in zip(names, scores.iou):
        theirs = result["classScores"][name]
        if math.isnan(theirs):
            assert math.isnan(iou), name
        else:
            assert iou == pytest.approx(theirs, abs=1e-12), name
    assert math.isnan(scores.iou[names.index("pole")])
    assert scores.iou[names.index("motorcycle")] == 0.0   # predicted, never true: 0, and it counts
    assert math.isnan(scores.iou[names.index("bicycle")])  # in neither
    assert scores.miou == pytest.approx(result["averageScoreClasses"], abs=1e-12)
