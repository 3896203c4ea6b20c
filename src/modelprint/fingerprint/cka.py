"""Linear CKA between layer activations (Kornblith et al. 2019): a similarity of two networks that holds across
architectures, for copies distilled into another one."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..symmetry import PRODUCERS


def layer_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The output of every Linear/Conv layer of ``model`` on ``x``, one (samples, features) matrix each."""
    acts: list[torch.Tensor] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, o: acts.append(o.detach().float().flatten(1)))
        for m in model.modules()
        if isinstance(m, PRODUCERS)
    ]
    try:
        with torch.no_grad():
            was = model.training
            model.eval()
            model(x.to(next(model.parameters()).dtype))
            model.train(was)
    finally:
        for h in hooks:
            h.remove()
    return acts


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) between two activation matrices over the same samples: invariant to
    orthogonal maps and isotropic scaling of either side, so to permutations of units and to architecture."""
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    num = (x.T @ y).pow(2).sum()
    den = (x.T @ x).pow(2).sum().sqrt() * (y.T @ y).pow(2).sum().sqrt()
    return float(num / den) if den > 0 else 0.0


def cka_matrix(model_a: nn.Module, model_b: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Linear CKA between every layer output of ``model_a`` (rows) and of ``model_b`` (columns) on ``x``."""
    la, lb = layer_outputs(model_a, x), layer_outputs(model_b, x)
    return np.array([[linear_cka(a, b) for b in lb] for a in la])


def cka_score(model_a: nn.Module, model_b: nn.Module, x: torch.Tensor) -> float:
    """Architecture-independent similarity: for each layer of ``model_a``, the best linear CKA with a layer of
    ``model_b`` on inputs ``x``, averaged over ``model_a``'s layers."""
    return float(cka_matrix(model_a, model_b, x).max(1).mean())
