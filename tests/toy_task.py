"""A tiny two-phase GAN-like task for exercising the training loop on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from s2rcli.models.contract import DataSource, Phase, TrainTask


class ToyData(DataSource):
    """Deterministic by index: batch k of rank r is a pure function of (seed, k)."""

    def __init__(self, batch: int = 4, seed: int = 0, rank: int = 0, world: int = 1):
        self.batch, self.seed, self.rank, self.world = batch, seed, rank, world
        self.position = 0

    def __iter__(self):
        while True:
            k = self.position * self.world + self.rank
            self.position += 1
            g = np.random.default_rng([self.seed, k])
            x = torch.from_numpy(g.normal(size=(self.batch, 3)).astype(np.float32))
            yield {"x": x, "y": x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3}

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        if state:
            self.position = state["position"]


class ToyTask(TrainTask):
    def loss(self, phase, batch, step):
        G, D = self.nets["G"], self.nets["D"]
        pred = G(batch["x"]) + 0.01 * torch.randn_like(batch["y"])  # noise: the RNG must be resumed too
        if phase == "D":
            fake = D(torch.cat([batch["x"], pred.detach()], 1))
            real = D(torch.cat([batch["x"], batch["y"]], 1))
            adv = (fake ** 2).mean() + ((real - 1) ** 2).mean()
            return {"loss": adv, "adv": adv}
        recon = ((pred - batch["y"]) ** 2).mean()
        adv = ((D(torch.cat([batch["x"], pred], 1)) - 1) ** 2).mean()
        return {"loss": recon + 0.01 * adv, "recon": recon, "adv": adv}


def make_toy_task(seed: int = 0, batch: int = 4, rank: int = 0, world: int = 1, lr: float = 0.05) -> ToyTask:
    torch.manual_seed(seed)
    G, D = nn.Linear(3, 1), nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    model = nn.ModuleDict({"G": G, "D": D})
    return ToyTask(
        model_name="toy", model_kwargs={}, model=model, nets={"G": G, "D": D},
        phases=[Phase("D", "D", ("D",)), Phase("G", "G", ("G",))],
        optimizers=(opts := {"G": torch.optim.Adam(G.parameters(), lr=lr), "D": torch.optim.Adam(D.parameters(), lr=lr)}),
        schedulers={"G": torch.optim.lr_scheduler.StepLR(opts["G"], step_size=50, gamma=0.5)},
        data=ToyData(batch=batch, seed=seed, rank=rank, world=world), ema={"G_ema": "G"}, monitor="G/recon",
    )


# --- a tiny two-domain world on disk (folder: layout) for training and translate tests -------------

def write_folder_world(root, n: int = 6, size: tuple[int, int] = (40, 72), seed: int = 0) -> dict[str, str]:
    """``root/synthetic`` (flat colours) and ``root/real`` (noisy, colour-shifted), each with
    ``images/`` and ``labels/`` (cityscapes19 ids). Returns the two ``folder:`` specs."""
    from pathlib import Path

    from PIL import Image

    colors = {0: (128, 64, 128), 2: (70, 70, 70), 8: (107, 142, 35), 10: (70, 130, 180), 13: (0, 0, 142)}
    h, w = size
    specs = {}
    for domain in ("synthetic", "real"):
        rng = np.random.default_rng([seed, domain == "real"])
        for folder in ("images", "labels"):
            (Path(root) / domain / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            label = np.full((h, w), 10, np.uint8)
            horizon = int(rng.integers(h // 3, h // 2))
            label[horizon:] = 0
            split = int(rng.integers(w // 4, 3 * w // 4))
            label[h // 6:horizon, :split] = 2 if domain == "synthetic" else 8
            label[h // 6:horizon, split:] = 8 if domain == "synthetic" else 2
            car = int(rng.integers(0, w - 12))
            label[horizon - 4:horizon + 6, car:car + 12] = 13
            image = np.zeros((h, w, 3), np.float32)
            for cls, col in colors.items():
                image[label == cls] = col
            if domain == "real":
                image = image * 0.8 + 25 + rng.normal(0, 18, image.shape)
            image = np.clip(image, 0, 255).astype(np.uint8)
            Image.fromarray(image).save(Path(root) / domain / "images" / f"{domain[:3]}_{i:03d}.png")
            Image.fromarray(label).save(Path(root) / domain / "labels" / f"{domain[:3]}_{i:03d}.png")
        specs[domain] = f"folder:{Path(root) / domain}"
    return specs


class MemoryDataset:
    """An in-memory stand-in for :class:`s2rcli.data.datasets.Dataset` (read_image, read_label, names)."""

    def __init__(self, n: int = 4, size: tuple[int, int] = (40, 72), seed: int = 0, space: str = "cityscapes19",
                 num_classes: int = 19):
        from s2rcli.data.labels import get_label_space

        rng = np.random.default_rng(seed)
        self.space = get_label_space(space)
        self.kind, self.split = "memory", None
        self.labels = [rng.integers(0, num_classes, size=(size[0] // 8, size[1] // 8)).astype(np.uint8)
                       .repeat(8, 0).repeat(8, 1) for _ in range(n)]
        self.images = [rng.integers(0, 256, size=(*size, 3)).astype(np.uint8) for _ in range(n)]
        self.names = [f"m{i:03d}" for i in range(n)]
        self.has_labels = True

    def __len__(self) -> int:
        return len(self.images)

    def read_image(self, i: int) -> np.ndarray:
        return self.images[i]

    def read_label(self, i: int) -> np.ndarray:
        return self.labels[i]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Run a test module on one intra-op thread (restored afterwards).

    On a 2-core machine shared with other test processes, OpenMP threads that
    spin-wait for each other made the tiny models ~10x slower than one thread.
    """
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
