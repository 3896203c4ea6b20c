"""ModelGiF (Song et al., ICCV 2023): a model's gradient field, the input gradients of its output at points on
the straight path from a reference input to each sample, as a representation of its function. Two models that
compute the same function have the same field wherever they are asked; a derived model keeps much of its
parent's, an independent one, even of the same accuracy, does not. White-box on both sides, and comparable
across architectures (only inputs and outputs are involved), like CKA."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


def gradient_field(
    model: nn.Module, x: torch.Tensor, classes: torch.Tensor, reference: torch.Tensor, points: int = 20
) -> torch.Tensor:
    """The gradient of log p(class | x_t) with respect to x_t at ``points`` evenly spaced points
    x_t = reference + t (x - reference), t in (0, 1], for each sample: a tensor (n, points, *input shape)."""
    device = next(model.parameters()).device
    x, classes, reference = x.to(device), classes.to(device), reference.to(device)
    out = []
    for t in torch.linspace(1.0 / points, 1.0, points).tolist():
        xt = (reference + t * (x - reference)).requires_grad_(True)
        logp = F.log_softmax(model(xt), dim=1).gather(1, classes[:, None]).sum()
        (g,) = torch.autograd.grad(logp, xt)
        out.append(g.detach().cpu())
    return torch.stack(out, 1)


def gif_similarity(
    model_a: nn.Module, model_b: nn.Module, x: torch.Tensor, points: int = 20, field_a: torch.Tensor | None = None
) -> float:
    """The mean over samples of the cosine similarity of the two models' gradient fields (ModelGiF's functional
    distance is one minus it), both taken for ``model_a``'s answer on each sample, from the data's mean input as
    the reference (the paper's all-zero reference is the mean of its normalised data)."""
    model_a, model_b = model_a.eval(), model_b.eval()
    reference = x.mean(0, keepdim=True)
    with torch.no_grad():
        classes = model_a(x.to(next(model_a.parameters()).device)).argmax(1).cpu()
    a = field_a if field_a is not None else gradient_field(model_a, x, classes, reference, points)
    b = gradient_field(model_b, x, classes, reference, points)
    if a.shape != b.shape:
        raise ConfigError("the two models' gradient fields differ in shape: do they take the same inputs?")
    return float(F.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1, eps=1e-30).mean())


def compare_gradients(
    model_a: nn.Module,
    model_b: nn.Module,
    data="digits",
    *,
    samples: int = 64,
    points: int = 20,
    null_models=None,
    alpha: float = 0.01,
    cache_dir=None,
    device: str = "cpu",
):
    """Is ``model_b`` derived from ``model_a``, whatever its architecture? The score is ``gif_similarity`` on
    ``samples`` held-out inputs of ``data``; its null is the score of independent models of any architecture
    (``null_models``; by default 2 seeds of each of 4 architectures when the lineage module built
    ``model_a``). Returns the project's ``Verdict``."""
    from ..access import architecture
    from .helpers import held_out
    from .weights import _calibrated, default_nulls

    x, _, _ = held_out(data)
    x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:samples]]
    reference = x.mean(0, keepdim=True)
    with torch.no_grad():
        classes = model_a.eval()(x.to(next(model_a.parameters()).device)).argmax(1).cpu()
    field_a = gradient_field(model_a, x, classes, reference, points)  # once, for the suspect and every null
    nulls = list(null_models) if null_models is not None else default_nulls(model_a, cross_architecture=True)
    return _calibrated(
        gif_similarity(model_a, model_b, x, points, field_a),
        {"samples": len(x), "points": points},
        nulls,
        lambda m: gif_similarity(model_a, m, x, points, field_a),
        alpha,
        "weights:gradient-field",
        cache_dir,
        device,
        architecture(model_b),
        architecture(model_a),
    )
