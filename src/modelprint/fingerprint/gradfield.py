"""ModelGiF (Song et al., ICCV 2023): a model's gradient field, the input gradients of its output at points on
the straight path from a reference input to each sample, as a representation of its function. Two models that
compute the same function have the same field wherever they are asked; a derived model keeps much of its
parent's, an independent one, even of the same accuracy, does not. White-box on both sides, and comparable
across architectures (only inputs and outputs are involved), like CKA."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class OwnerField:
    """What every comparison with one owner shares: its answers on the samples, the reference input (the data's
    mean; the paper's all-zero reference is the mean of its normalised data) and its gradient field."""

    x: torch.Tensor
    classes: torch.Tensor
    reference: torch.Tensor
    field: torch.Tensor

    @classmethod
    def of(cls, model: nn.Module, x: torch.Tensor, points: int = 20) -> OwnerField:
        model = model.eval()
        with torch.no_grad():
            classes = model(x.to(next(model.parameters()).device)).argmax(1).cpu()
        reference = x.mean(0, keepdim=True)
        return cls(x, classes, reference, gradient_field(model, x, classes, reference, points))

    def similarity(self, model: nn.Module) -> float:
        """The mean over samples of the cosine similarity of ``model``'s gradient field to the owner's, both
        taken for the owner's answer on each sample (ModelGiF's functional distance is one minus it)."""
        other = gradient_field(model.eval(), self.x, self.classes, self.reference, self.field.shape[1])
        if other.shape != self.field.shape:
            raise ConfigError("the two models' gradient fields differ in shape: do they take the same inputs?")
        a, b = self.field.flatten(1).double(), other.flatten(1).double()
        return float(F.cosine_similarity(a, b, dim=1, eps=1e-30).mean())


def gif_similarity(model_a: nn.Module, model_b: nn.Module, x: torch.Tensor, points: int = 20) -> float:
    """ModelGiF's similarity of ``model_b`` to ``model_a`` on samples ``x`` (see ``OwnerField.similarity``)."""
    return OwnerField.of(model_a, x, points).similarity(model_b)


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
    owner = OwnerField.of(model_a, x, points)  # once, for the suspect and every null
    nulls = list(null_models) if null_models is not None else default_nulls(model_a, cross_architecture=True)
    return _calibrated(
        owner.similarity(model_b),
        {"samples": len(x), "points": points},
        nulls,
        owner.similarity,
        alpha,
        "weights:gradient-field",
        cache_dir,
        device,
        architecture(model_b),
        architecture(model_a),
    )
