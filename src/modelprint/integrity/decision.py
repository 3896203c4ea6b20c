"""Label-only trigger search: Neural Cleanse's question (the smallest mask and pattern that send clean inputs to
a class) asked of a model seen only through its labels, such as a served API.

B3D (Dong et al., "Black-box Detection of Backdoor Attacks with Limited Information and Data", ICCV 2021) answers
it from the model's scores: the trigger is drawn from a distribution (a mask and a pattern per class) whose
parameters follow natural evolution strategies' gradient estimate of Neural Cleanse's loss. Here the loss can use
labels only: ``-hit + penalty * |mask| / positions``, where ``hit`` is the share of clean inputs (not already of
the class) that the stamped inputs send to the class and, with a ``trusted`` model, that the trusted model does not
send there. (Not "that the trusted model answers as before", as the white-box diff asks: a patch of the data's
extremes is itself a large change, and measured on MNIST-1D it moved a clean MLP's answers on about half of the
inputs, so that no trigger met both conditions; asked this way, the MLP's BadNets and hidden backdoors were found,
2 of 40 positions, and its fine-tunes still obeyed no trigger within a quarter of the input.) Averaged over
inputs, that share moves smoothly enough with the trigger for the estimate to climb it: a backdoor's target is
reached while every other class's mask shrinks away.

Deviations from B3D: hard labels instead of scores; mask and pattern both drawn as logistic-normal (B3D draws the
mask from a Bernoulli); antithetic samples, their losses standardised per class; a fixed number of steps. The
distribution's mean trigger is then made crisp on inputs the search never saw: its largest ``k`` mask positions,
for the smallest ``k`` of a geometric grid that reaches ``success`` there (a class never reached keeps the whole
input, the largest norm, as in ``neural-cleanse``). The score is Neural Cleanse's anomaly index over those crisp
sizes, its scale at least one position (most classes are never reached, so their sizes' MAD is often 0).

Cost: ``steps * classes * 2 * samples * inputs`` label queries (512,000 with the defaults on 10 classes), plus
``classes * checked`` per size of the grid (at most 24) for the crisp triggers; 20-90 s for a digits CNN on one
core.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from ..access import Model
from ..errors import ConfigError
from .backdoor import DETECTORS, Detector, outlier


@DETECTORS.register("label-search")
class LabelSearch(Detector):
    """Search each class's smallest trigger from labels alone (natural evolution strategies over a trigger
    distribution); score the outlier among their sizes."""

    needs: ClassVar[str] = "labels"

    def __init__(
        self,
        steps: int = 100,
        samples: int = 16,
        inputs: int = 16,
        checked: int = 64,
        success: float = 0.8,
        sigma: float = 1.0,
        lr: float = 0.3,
        penalty: float = 2.0,
        seed: int = 0,
    ):
        if min(steps, samples, inputs, checked) < 1 or not 0 < success <= 1 or sigma <= 0 or lr <= 0:
            raise ConfigError(
                "label-search needs steps, samples, inputs, checked >= 1, success in (0, 1], sigma > 0 and lr > 0"
            )
        self.steps, self.samples, self.inputs, self.checked, self.success = steps, samples, inputs, checked, success
        self.sigma, self.lr, self.penalty, self.seed = sigma, lr, penalty, seed

    def score(
        self, model: Model, x: torch.Tensor, y: torch.Tensor, trusted: Model | None = None
    ) -> tuple[float, dict[str, Any]]:
        if len(x) < self.inputs + self.checked:
            raise ConfigError(f"label-search needs {self.inputs + self.checked} clean inputs, the data has {len(x)}")
        x = x.cpu()[torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))]
        search, check = x[: self.inputs], x[self.inputs : self.inputs + self.checked]
        classes = int(y.max()) + 1  # the task's (a served model need not say)
        shape = Shape(x)
        mask, pattern = self.reverse(model, trusted, search, classes, shape)
        masks, rates = crisp(model, trusted, check, mask, pattern, shape, self.success)
        # sizes are whole positions, and most classes are never reached: the anomaly index's scale is at least 1
        score, details = outlier(masks.sum(1).numpy().astype(np.float64), rates, masks.view(classes, *shape.spatial),
                                 pattern.view(classes, *shape.input), floor=1.0)  # fmt: skip
        return score, {**details, "label_queries": model.queries}

    @torch.no_grad()
    def reverse(self, model: Model, trusted: Model | None, x: torch.Tensor, classes: int, shape: Shape):
        """The mean mask (classes, positions) and pattern (classes, features) of each class's trigger
        distribution after ``steps`` of natural evolution strategies."""
        gen = torch.Generator().manual_seed(self.seed)
        mask_logit = torch.full((classes, shape.positions), -1.0)
        pattern_logit = torch.zeros((classes, shape.features))
        before = answers(model, trusted, x)
        for _ in range(self.steps):
            eps_m = torch.randn((classes, self.samples, shape.positions), generator=gen)
            eps_p = torch.randn((classes, self.samples, shape.features), generator=gen)
            eps_m, eps_p = torch.cat([eps_m, -eps_m], 1), torch.cat([eps_p, -eps_p], 1)  # antithetic pairs
            mask = torch.sigmoid(mask_logit[:, None] + self.sigma * eps_m)
            pattern = shape.value(pattern_logit[:, None] + self.sigma * eps_p)
            hit = hits(model, trusted, x, before, mask.flatten(0, 1), pattern.flatten(0, 1), shape, classes)
            loss = -hit.view(classes, -1) + self.penalty * mask.mean(2)
            shaped = (loss - loss.mean(1, keepdim=True)) / (loss.std(1, keepdim=True) + 1e-8)
            mask_logit -= self.lr * (shaped[..., None] * eps_m).mean(1) / self.sigma
            pattern_logit -= self.lr * (shaped[..., None] * eps_p).mean(1) / self.sigma
        return torch.sigmoid(mask_logit), shape.value(pattern_logit)


class Shape:
    """Where a trigger's mask lives in inputs like ``x``: over spatial positions, shared by channels."""

    def __init__(self, x: torch.Tensor):
        self.input = tuple(x.shape[1:])
        self.spatial = self.input[1:] if x.ndim > 2 else self.input
        self.positions, self.features = int(np.prod(self.spatial)), int(np.prod(self.input))
        self.low, self.high = float(x.min()), float(x.max())

    def value(self, logit: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logit) * (self.high - self.low) + self.low

    def stamp(self, x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
        """Every input of ``x`` stamped with each of the ``k`` triggers: ``(k * n, ...)``, trigger-major."""
        k = len(mask)
        mask = mask.view(k, 1, *([1] * (len(self.input) - len(self.spatial))), *self.spatial)
        return ((1 - mask) * x[None] + mask * pattern.view(k, 1, *self.input)).flatten(0, 1)


def answers(model: Model, trusted: Model | None, x: torch.Tensor) -> torch.Tensor:
    """The clean inputs' labels: the trusted model's when there is one, else the suspect's own."""
    return (trusted or model).labels(x)


def _labels(model: Model, x: torch.Tensor) -> torch.Tensor:
    """Labels of many stamped inputs, asked in slices (a callable suspect need not take 10,000 at once)."""
    return torch.cat([model.labels(part) for part in x.split(4096)])


def hits(model, trusted, x, before, mask, pattern, shape: Shape, classes: int) -> torch.Tensor:
    """Per trigger (trigger ``i`` aims at class ``i // samples`` in the flattened (classes, samples)): the share
    of inputs not already of its class that it sends there, while ``trusted`` does not."""
    stamped = shape.stamp(x, mask, pattern)
    target = (torch.arange(len(mask)) // (len(mask) // classes))[:, None]
    answer = _labels(model, stamped).view(len(mask), -1)
    ok = answer == target
    if trusted is not None:
        reference = _labels(trusted, stamped).view(len(mask), -1)
        ok &= reference != target
    eligible = before[None] != target
    return (ok & eligible).sum(1) / eligible.sum(1).clamp_min(1)


@torch.no_grad()
def crisp(model, trusted, x, mask, pattern, shape: Shape, success: float, sizes: int = 24):
    """Each class's mean trigger reduced to its largest ``k`` mask positions, for the smallest ``k`` of a
    geometric grid whose hit rate on ``x`` reaches ``success`` (hits are not monotone in ``k``: a larger mask
    also sends the trusted model there): 0/1 masks (the whole input where no ``k`` reaches it) and the hit rate
    of each (the best one where none reached it)."""
    classes = len(mask)
    before = answers(model, trusted, x)
    order = mask.argsort(1, descending=True)
    final, rate = torch.ones_like(mask), torch.zeros(classes)
    done = torch.zeros(classes, dtype=torch.bool)
    for k in np.unique(np.geomspace(1, shape.positions, sizes).round().astype(int)).tolist():
        top = torch.zeros_like(mask).scatter(1, order[:, :k], 1.0)
        hit = hits(model, trusted, x, before, top, pattern, shape, classes)
        reached = (hit >= success) & ~done
        final[reached], rate[reached] = top[reached], hit[reached]
        rate[~done & ~reached] = torch.maximum(rate, hit)[~done & ~reached]
        done |= reached
    return final, rate
