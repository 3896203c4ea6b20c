"""Quality proxies for generated digits: a small classifier's confidence on samples, and a Frechet distance in
its feature space to held-out digits (FID's recipe on a judge trained here, since no Inception weights may be
downloaded)."""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import data
from ..errors import ConfigError
from .model import images


@cache
def _judge() -> nn.Module:
    """A small digits classifier (8x8 inputs), trained once per process, that scores generated samples."""
    from ..lineage.train import fit
    from ..nets import make_net

    ds = data.load("digits", "train")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = make_net("cnn", (1, 8, 8), 10)
    with torch.enable_grad():  # callers may be under no_grad
        return fit(net, ds.x.float(), ds.y, epochs=30, lr=0.003, seed=0).eval()


def _judged(images: torch.Tensor) -> torch.Tensor:
    if images.ndim != 4 or images.shape[1] != 1:
        raise ConfigError(f"the quality proxy scores 1-channel image batches, got shape {tuple(images.shape)}")
    return F.adaptive_avg_pool2d((images.float().cpu() + 1) / 2, 8)  # back to the classifier's 8x8 in [0, 1]


@torch.no_grad()
def confidence(images: torch.Tensor) -> float:
    """The mean top-class probability a digits classifier gives to samples in [-1, 1] (downsampled to 8x8)."""
    return float(F.softmax(_judge()(_judged(images)), 1).amax(1).mean())


@torch.no_grad()
def frechet(images: torch.Tensor) -> float:
    """FID with a small feature extractor: the Frechet distance between Gaussians fitted to the digits
    classifier's penultimate features of ``images`` and of the held-out digits (0 for the same distribution;
    compare values at the same sample count, as the estimate is biased upwards for small sets)."""
    from scipy import linalg

    if len(images) < 2:
        raise ConfigError("the Frechet distance needs at least 2 images")
    mean_a, ca = _feature_gaussian(images)
    mean_b, cb = _held_out_gaussian()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(ca @ cb).real
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(ca + cb - 2 * root))


@torch.no_grad()
def _feature_gaussian(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the digits classifier's penultimate features of ``images``."""
    f = _judge()[:-1](_judged(images)).double().numpy()
    ridge = 1e-6 * np.eye(f.shape[1])  # ReLU features include dead units: keep the covariance invertible
    return f.mean(0), np.cov(f, rowvar=False) + ridge


@cache
def _held_out_gaussian() -> tuple[np.ndarray, np.ndarray]:
    return _feature_gaussian(images("test"))
