"""Evaluation metrics: FID/KID through torch-fidelity (:mod:`.fid`) and
segmentation scores from a confusion matrix (:mod:`.segmentation`).

The submodules are imported on demand, so ``import s2rcli`` stays light.
"""
