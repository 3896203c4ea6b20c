"""Networks modelprint did not build, trained by code modelprint did not write: the foreign models every command
is tested on (loaded by the command line from this file, as ``--arch tests/foreign_nets.py:Residual``)."""

from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    """Input scaling, BatchNorm1d, a residual block with LayerNorm and GELU, Dropout and a buffer."""

    def __init__(self, features: int = 64, hidden: int = 48, classes: int = 10):
        super().__init__()
        self.register_buffer("centre", torch.full((features,), 0.5))
        self.inp = nn.Linear(features, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.block = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(0.1))
        self.out = nn.Linear(hidden, classes)

    def forward(self, x):
        h = torch.relu(self.bn(self.inp((x.flatten(1) - self.centre) * 2)))
        return self.out(h + self.block(h))


class Tabular(nn.Module):
    """A plain MLP on feature vectors (n, F)."""

    def __init__(self, features: int = 12, classes: int = 3):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, 32), nn.SiLU(), nn.Linear(32, classes))

    def forward(self, x):
        return self.net(x)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int = 40) -> nn.Module:
    """Plain SGD with momentum, full batches in a fixed random order: not modelprint's recipe."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()
