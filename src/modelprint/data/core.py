"""Datasets as tensors with three fixed, disjoint, stratified splits: train (the owner's), attacker, test."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ..base import Registry
from ..errors import ConfigError, DataError

SPLITS = ("train", "attacker", "test")
# The owner keeps half; a thief has about a quarter; a quarter is held out for evaluation.
FRACTIONS = {"train": 0.5, "attacker": 0.25, "test": 0.25}
SPLIT_SEED = 0


@dataclass
class Source:
    """A whole dataset in memory: inputs (N, *input_shape) float32, labels (N,) int64, and its splits."""

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    splits: dict[str, np.ndarray] = field(default_factory=dict)  # split name -> indices into x

    def __post_init__(self) -> None:
        if self.x.ndim < 2 or len(self.x) != len(self.y):
            raise DataError(f"inputs {self.x.shape} and labels {self.y.shape} do not match")
        if not np.isfinite(self.x).all():
            raise DataError("inputs contain NaN or infinite values")
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= self.num_classes):
            raise DataError(f"labels must lie in [0, {self.num_classes}); got [{self.y.min()}, {self.y.max()}]")
        if not self.splits:
            self.splits = stratified_splits(self.y)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


class LabeledDataset(TensorDataset):
    """A ``TensorDataset`` of (input, label) that also knows its name, split, classes and input shape."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, name: str, split: str, num_classes: int):
        super().__init__(x, y)
        self.name, self.split, self.num_classes = name, split, num_classes

    @property
    def x(self) -> torch.Tensor:
        return self.tensors[0]

    @property
    def y(self) -> torch.Tensor:
        return self.tensors[1]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def __repr__(self) -> str:
        return f"LabeledDataset({self.name!r}, split={self.split!r}, n={len(self)}, classes={self.num_classes})"


def stratified_splits(y: np.ndarray, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Disjoint train/attacker/test indices, stratified by label, fixed by ``seed``."""
    from sklearn.model_selection import train_test_split  # here: a command that needs no data skips its import

    idx = np.arange(len(y))
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 4 else None  # sklearn needs >=2 per class per cut
    train, rest = train_test_split(idx, train_size=FRACTIONS["train"], stratify=stratify, random_state=seed)
    rest_y = y[rest] if stratify is not None else None
    attacker, test = train_test_split(rest, train_size=0.5, stratify=rest_y, random_state=seed)
    return {"train": np.sort(train), "attacker": np.sort(attacker), "test": np.sort(test)}


def carve_attacker(train: np.ndarray, y: np.ndarray, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Split a given training set 2:1 into the owner's train and the thief's attacker split."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y[train])
    stratify = y[train] if counts[counts > 0].min() >= 3 else None
    tr, att = train_test_split(train, test_size=1 / 3, stratify=stratify, random_state=seed)
    return {"train": np.sort(tr), "attacker": np.sort(att)}


# name -> function returning the whole dataset; "prefix:" names take the rest of the string as argument.
SOURCES: Registry[Source] = Registry("dataset")


@lru_cache(maxsize=32)
def source(name: str) -> Source:
    """The whole dataset called ``name`` (cached in memory: generation and decoding are done once)."""
    if ":" in name:
        prefix, _, arg = name.partition(":")
        return SOURCES.make(prefix + ":", arg)
    return SOURCES.make(name)


def load(name: str, split: str = "train") -> LabeledDataset:
    """Dataset ``name`` (``digits``, ``mnist1d``, ``digits-c``, ``npz:PATH``, ...), one of its splits or ``all``."""
    if split not in (*SPLITS, "all"):
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)} or all")
    src = source(name)
    idx = np.arange(len(src.y)) if split == "all" else src.splits[split]
    x = torch.from_numpy(np.ascontiguousarray(src.x[idx], dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(src.y[idx], dtype=np.int64))
    return LabeledDataset(x, y, name, split, src.num_classes)


def digest(name: str) -> str:
    """A digest of the local files behind ``name`` (``npz:``/``folder:``), empty for bundled datasets."""
    from ..digest import path_digest

    prefix, sep, path = name.partition(":")
    # tensors:DIGEST is named by its content already
    return path_digest(path) if sep and prefix + ":" in SOURCES and prefix != "tensors" else ""


def names() -> list[str]:
    """Registered dataset names (``npz:`` and ``folder:`` take a path)."""
    return SOURCES.names()


def register(name: str) -> Callable:
    return SOURCES.register(name)
