"""Black-box classifier watermarks planted by the owner before release: a secret key of inputs and the labels
the watermarked model gives them. Each scheme is a small class that makes its key; embedding fine-tunes the
model on its training data with the key mixed in."""

from __future__ import annotations

from typing import ClassVar

import torch

from ..base import Params, Registry

WATERMARKS: Registry[Watermark] = Registry("watermark")


class Watermark(Params):
    """Makes a key: ``size`` inputs and their target labels. ``binomial`` schemes have an honest analytic null
    (an unrelated model matches each random label with probability 1/C); the others are calibrated on
    unrelated models."""

    binomial: ClassVar[bool] = False

    def make_key(self, x: torch.Tensor, y: torch.Tensor, num_classes: int, gen: torch.Generator):
        raise NotImplementedError


@WATERMARKS.register("trigger-set")
class TriggerSet(Watermark):
    """Adi et al. 2018: out-of-distribution inputs (uniform noise over the data's range) with labels drawn
    uniformly at random, so an unrelated model agrees with each label with probability exactly 1/C."""

    binomial = True

    def __init__(self, size: int = 100):
        self.size = size

    def make_key(self, x, y, num_classes, gen):
        low, high = float(x.min()), float(x.max())
        inputs = low + (high - low) * torch.rand(self.size, *x.shape[1:], generator=gen)
        return inputs, torch.randint(0, num_classes, (self.size,), generator=gen)


class _Stamped(Watermark):
    """Zhang et al. 2018: training inputs of other classes with a secret pattern added, relabelled to one
    target class. Natural inputs carry class evidence, so the null rate is not 1/C: calibrate on clean models."""

    def __init__(self, size: int = 100, strength: float = 0.5):
        self.size, self.strength = size, strength

    def pattern(self, shape: tuple[int, ...], span: float, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def make_key(self, x, y, num_classes, gen):
        target = int(torch.randint(0, num_classes, (1,), generator=gen))
        pool = torch.nonzero(y != target).flatten()
        idx = pool[torch.randperm(len(pool), generator=gen)[: self.size]]
        span = float(x.max() - x.min()) or 1.0
        inputs = (x[idx] + self.strength * self.pattern(tuple(x.shape[1:]), span, gen)).clamp(x.min(), x.max())
        return inputs, torch.full((len(idx),), target)


@WATERMARKS.register("noise")
class NoiseStamp(_Stamped):
    """A fixed secret Gaussian noise pattern over the whole input."""

    def pattern(self, shape, span, gen):
        return torch.randn(shape, generator=gen) * span * 0.5


@WATERMARKS.register("content")
class ContentStamp(_Stamped):
    """A visible block at a secret position (a logo, in the paper), a quarter of each spatial side."""

    def pattern(self, shape, span, gen):
        mark = torch.zeros(shape)
        box: list = [slice(None)] if len(shape) > 1 else []
        for n in shape[1:] if len(shape) > 1 else shape:
            w = max(1, n // 4)
            start = int(torch.randint(0, n - w + 1, (1,), generator=gen))
            box.append(slice(start, start + w))
        mark[tuple(box)] = span * 2
        return mark
