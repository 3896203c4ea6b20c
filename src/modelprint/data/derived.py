"""Datasets derived from a base one, for transfer and corruption attacks; they keep the base's splits."""

from __future__ import annotations

import numpy as np

from .core import Source, register, source

CORRUPTIONS = ("noise", "blur", "shift")


def corrupted(base: Source, seed: int = 0) -> Source:
    """A corrupted copy (like CIFAR-10-C): each sample gets Gaussian noise, a blur or a one-step shift."""
    rng = np.random.default_rng(seed)
    kinds = rng.integers(len(CORRUPTIONS), size=len(base.x))
    x = base.x.copy()
    spatial = tuple(range(2, x.ndim))
    sigma = 0.3 * float(base.x.std())
    noisy = kinds == 0
    x[noisy] += rng.normal(0.0, sigma, size=x[noisy].shape).astype(np.float32)
    blurred = kinds == 1
    for ax in spatial:  # separable [1/4, 1/2, 1/4] kernel, edges replicated
        b = x[blurred]
        pad = np.concatenate([b.take([0], ax), b, b.take([-1], ax)], axis=ax)
        n = b.shape[ax]
        x[blurred] = 0.25 * pad.take(range(0, n), ax) + 0.5 * b + 0.25 * pad.take(range(2, n + 2), ax)
    for i in np.flatnonzero(kinds == 2):
        steps = rng.choice([-1, 1], size=len(spatial))
        x[i] = _shift(x[i], steps)
    return Source(x, base.y.copy(), base.num_classes, base.splits)


def _shift(sample: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Translate one sample by ``steps`` along its spatial axes, filling with the sample's minimum."""
    out = sample
    for ax, s in zip(range(1, sample.ndim), steps, strict=True):
        out = np.roll(out, s, axis=ax)
        edge = [slice(None)] * sample.ndim
        edge[ax] = slice(0, 1) if s > 0 else slice(-1, None)
        out[tuple(edge)] = sample.min()
    return out


def parity(base: Source) -> Source:
    """The same inputs with a two-class label set: even vs odd."""
    return Source(base.x, base.y % 2, 2, base.splits)


def upper_half(base: Source) -> Source:
    """Only the upper half of the classes, relabelled from 0: a new task on similar inputs."""
    lo = base.num_classes // 2
    keep = np.flatnonzero(base.y >= lo)
    remap = np.full(len(base.y), -1)
    remap[keep] = np.arange(len(keep))
    splits = {k: remap[v][remap[v] >= 0] for k, v in base.splits.items()}
    return Source(base.x[keep], base.y[keep] - lo, base.num_classes - lo, splits)


def _register_derived(base_name: str) -> None:
    register(f"{base_name}-c")(lambda: corrupted(source(base_name)))
    register(f"{base_name}-parity")(lambda: parity(source(base_name)))
    register(f"{base_name}-upper")(lambda: upper_half(source(base_name)))


for _name in ("digits", "mnist1d"):
    _register_derived(_name)
