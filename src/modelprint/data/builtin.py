"""The datasets that install offline: scikit-learn's digits and locally generated MNIST-1D."""

from __future__ import annotations

import random

import numpy as np

from .core import Source, register


@register("digits")
def digits() -> Source:
    """scikit-learn's 1797 bundled 8x8 digits, pixels scaled to [0, 1], shape (1, 8, 8)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]
    return Source(x, d.target.astype(np.int64), 10)


@register("mnist1d")
def mnist1d() -> Source:
    """MNIST-1D (5000 signals of length 40, shape (1, 40)) generated locally, never downloaded."""
    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset reseeds the global RNGs; keep the caller's random state untouched.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x = np.concatenate([d["x"], d["x_test"]]).astype(np.float32)[:, None, :]
    y = np.concatenate([d["y"], d["y_test"]]).astype(np.int64)
    return Source(x, y, 10)
