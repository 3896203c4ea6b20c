"""White-box evidence from linear mode connectivity: after aligning the suspect's hidden units to the owner's
(Git Re-Basin weight matching, Ainsworth et al., ICLR 2023), the loss along the straight line between the two
sets of weights. A model fine-tuned, pruned or otherwise derived from the owner stays in the owner's basin, so the
path has (almost) no barrier; an independent model, even aligned, sits in another basin and the path climbs
over a ridge (Frankle et al., ICML 2020; Entezari et al., ICLR 2022). The barrier is calibrated like
``compare_weights``: against independent models of the owner's architecture.

Where it is weak, measured on digits: after weight matching, independent small MLPs and CNNs are often
linearly connected themselves (barriers 0 to 0.06, as Entezari et al. conjecture for wide networks), so their
null reaches a derived model's zero barrier and the verdict is inconclusive; independent LeNets are not (0.06 to
0.15). The weight-matching agreement (``compare_weights``) separates all three."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .matching import equinormalize, input_shape_of, match_weights


@dataclass(frozen=True)
class Path:
    """The loss (cross-entropy on the data given) at evenly spaced points of the linear path, and its barrier:
    the largest excess over the straight line between the two end losses (Frankle et al.'s definition)."""

    t: np.ndarray
    loss: np.ndarray

    @property
    def barrier(self) -> float:
        line = (1 - self.t) * self.loss[0] + self.t * self.loss[-1]
        return float(max(0.0, (self.loss - line).max()))

    @property
    def score(self) -> float:
        """``1 - barrier``: 1 for a path without a ridge, lower the higher the ridge (a distance's scale)."""
        return 1.0 - self.barrier


def _has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    if _has_batch_norm(model):
        # interpolated weights do not fit interpolated running statistics: measure them afresh on the data
        # (the "reset" of Jordan et al., REPAIR, ICLR 2023)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None
        model.train()
        for xb in x.split(512):
            model(xb)
    model.eval()
    batches = zip(x.split(512), y.split(512), strict=True)
    return float(sum(F.cross_entropy(model(xb), yb, reduction="sum") for xb, yb in batches))


def loss_path(
    model_a: nn.Module,
    model_b: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    input_shape: tuple[int, ...] | None = None,
    points: int = 11,
    align: bool = True,
) -> Path:
    """The loss on ``(x, y)`` along the straight line from ``model_a`` to ``model_b`` (same architecture and
    widths), after removing positive rescalings and aligning ``model_b``'s hidden units to ``model_a``'s."""
    if points < 3:
        raise ConfigError(f"a loss path needs at least 3 points, got {points}")
    shape = input_shape_of(model_a, input_shape)
    a = equinormalize(model_a, shape).eval()
    b = equinormalize(model_b, shape).eval()
    if align:
        b, _ = match_weights(a, b, shape)
    sa, sb = a.state_dict(), b.state_dict()
    if set(sa) != set(sb) or any(sa[k].shape != sb[k].shape for k in sa):
        raise ConfigError("a loss path needs two models of one architecture with the same widths")
    mid = copy.deepcopy(a)
    device = next(a.parameters()).device
    x, y = x.to(device), y.to(device)
    ts = np.linspace(0.0, 1.0, points)
    losses = []
    for t in ts:
        mid.load_state_dict({k: torch.lerp(sa[k], sb[k], float(t)) if sa[k].is_floating_point() else sa[k] for k in sa})
        losses.append(_loss(mid, x, y) / len(x))
    return Path(ts, np.asarray(losses))


def compare_barrier(
    model_a: nn.Module,
    model_b: nn.Module,
    data="digits",
    *,
    input_shape: tuple[int, ...] | None = None,
    null_models=None,
    alpha: float = 0.01,
    points: int = 11,
    cache_dir=None,
    device: str = "cpu",
):
    """Is ``model_b``'s checkpoint derived from ``model_a``'s? The score is ``1 - barrier`` of the aligned
    linear path, the loss measured on ``data`` (a registered dataset's test split, or ``(x, y)``); its null is
    the score of independent models of ``model_a``'s architecture (``null_models``; by default 6 trained by the
    lineage module when it built ``model_a``). Returns the project's ``Verdict``, with both paths' losses."""
    from ..access import architecture
    from ..decide import Scale
    from .helpers import held_out
    from .weights import _calibrated, default_nulls

    x, y, _ = held_out(data)
    path = loss_path(model_a, model_b, x, y, input_shape, points)
    null_paths: list[list[float]] = []  # filled while the nulls are scored, for the plot

    def null_score(m: nn.Module) -> float:
        p = loss_path(model_a, m, x, y, input_shape, points)
        null_paths.append(p.loss.round(5).tolist())
        return p.score

    evidence = {
        "barrier": path.barrier,
        "path_t": path.t.round(3).tolist(),
        "path_loss": path.loss.round(5).tolist(),
        "null_path_loss": null_paths,
    }
    nulls = list(null_models) if null_models is not None else default_nulls(model_a)
    return _calibrated(
        path.score,
        evidence,
        nulls,
        null_score,
        alpha,
        "weights:barrier",
        cache_dir,
        device,
        architecture(model_b),
        architecture(model_a),
        Scale("distance"),
    )


def plot_paths(evidence: dict, path) -> None:
    """The suspect's loss path (red) over the independent models' paths (grey): a derived model stays flat."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import save_figure

    t = evidence["path_t"]
    fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
    for i, losses in enumerate(evidence.get("null_path_loss", [])):
        ax.plot(t, losses, color="tab:gray", alpha=0.6, label="independent models" if i == 0 else None)
    ax.plot(
        t, evidence["path_loss"], color="tab:red", linewidth=2, label=f"suspect (barrier {evidence['barrier']:.3f})"
    )
    ax.set_xlabel("position on the aligned linear path (0: owner, 1: the other model)")
    ax.set_ylabel("cross-entropy on the data")
    ax.legend(frameon=False, fontsize=8)
    save_figure(fig, path)
