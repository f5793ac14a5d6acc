"""A tiny two-phase GAN-like task for exercising the training loop on CPU."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from s2rcli.training.task import DataSource, Phase, TrainTask


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
