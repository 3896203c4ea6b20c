"""A fixed-length, permutation- and rescaling-invariant signature of a network's weights: the key a registry
indexes to find candidate parents at scale."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..symmetry import PRODUCERS
from .matching import equinormalize, input_shape_of

# --- invariant signatures ------------------------------------------------------------------------------------

SIGNATURE_SLOTS, SIGNATURE_SINGULAR = 8, 6


def _layer_features(w: torch.Tensor) -> np.ndarray:
    """Statistics of one weight matrix that no permutation of its rows or columns changes: the spectrum
    (relative to the Frobenius norm), the log norm, quantiles of the row norms, skewness and kurtosis."""
    m = w.detach().double().reshape(w.shape[0], -1)
    fro = float(m.norm()) or 1.0
    sv = torch.linalg.svdvals(m)[:SIGNATURE_SINGULAR] / fro
    sv = torch.nn.functional.pad(sv, (0, SIGNATURE_SINGULAR - len(sv)))
    rows = m.norm(dim=1)
    q = torch.quantile(rows, torch.tensor([0.1, 0.5, 0.9], dtype=rows.dtype)) / (rows.mean() or 1.0)
    z = (m - m.mean()) / (m.std() or 1.0)
    return np.r_[sv.numpy(), np.log(fro), q.numpy(), float(z.pow(3).mean()), float(z.pow(4).mean())]


def signature(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A fixed-length vector per model from permutation- and rescaling-invariant weight statistics (after
    equi-normalisation), each layer's statistics interpolated onto ``SIGNATURE_SLOTS`` points of depth: the key
    a registry can index to find candidate parents at scale before running the exact tests."""
    model = equinormalize(model, input_shape_of(model, input_shape))
    layers = [m.weight for m in model.modules() if isinstance(m, PRODUCERS)]
    if not layers:
        raise ConfigError("a weight signature needs at least one Linear or Conv layer")
    feats = np.stack([_layer_features(w) for w in layers])  # (layers, features)
    depth = np.linspace(0, 1, len(layers)) if len(layers) > 1 else np.zeros(1)
    slots = np.linspace(0, 1, SIGNATURE_SLOTS)
    return np.concatenate([np.interp(slots, depth, feats[:, j]) for j in range(feats.shape[1])]).astype(np.float32)


def signature_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Similarity of two signatures: minus their Euclidean distance (0 for identical ones)."""
    return -float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
