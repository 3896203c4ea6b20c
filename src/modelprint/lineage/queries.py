"""What a thief sends to the victim: its own inputs, blends of them (mixup), augmented copies, uniform noise, or
natural images from elsewhere (Knockoff Nets' out-of-distribution queries). Each is a named ``QuerySource`` that
the extraction operations take as ``queries=``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..base import Params, Registry

QUERIES: Registry[QuerySource] = Registry("thief's query source")


class QuerySource(Params):
    """Turns a batch of the thief's own inputs into the inputs it sends to the victim. ``bind`` sees the thief's
    whole split once (for the input range)."""

    def bind(self, pool: torch.Tensor) -> QuerySource:
        self.low, self.high = float(pool.min()), float(pool.max())
        self.mean, self.std = float(pool.mean()), float(pool.std()) or 1.0
        self.shape = tuple(pool.shape[1:])
        return self

    @property
    def span(self) -> float:
        return (self.high - self.low) or 1.0

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


@QUERIES.register("own")
class Own(QuerySource):
    """The thief's own inputs, unchanged."""

    def __call__(self, x, gen):
        return x


@QUERIES.register("mixup")
class Mixup(QuerySource):
    """The batch plus blends of random pairs of it (weight of the second input in [0, 0.5])."""

    def __call__(self, x, gen):
        lam = (torch.rand(len(x), generator=gen) * 0.5).to(x.device).view(-1, *([1] * (x.ndim - 1)))
        perm = torch.randperm(len(x), generator=gen).to(x.device)
        return torch.cat([x, (1 - lam) * x + lam * x[perm]])


@QUERIES.register("augment")
class Augment(QuerySource):
    """The batch plus a copy shifted by up to one step along each spatial axis, with Gaussian noise (5% of the
    input range) and a random box erased: the usual augmentations of a thief that has few inputs."""

    def __call__(self, x, gen):
        out = x.clone()
        dims = list(range(2, x.ndim)) if x.ndim > 2 else [1]
        for d in dims:
            shift = int(torch.randint(-1, 2, (1,), generator=gen))
            out = out.roll(shift, d)
        out = out + torch.randn(out.shape, generator=gen).to(x.device) * 0.05 * self.span
        keep = torch.ones_like(out)
        for i in range(len(out)):
            box: list = [i] + [slice(None)] * (dims[0] - 1)
            for d in dims:
                n = out.shape[d]
                w = max(1, n // 4)
                s = int(torch.randint(0, n - w + 1, (1,), generator=gen))
                box.append(slice(s, s + w))
            keep[tuple(box)] = 0
        out = out * keep + self.low * (1 - keep)
        return torch.cat([x, out.clamp(self.low, self.high)])


@QUERIES.register("noise")
class UniformNoise(QuerySource):
    """Uniform random inputs over the input range, as many as the batch (Knockoff Nets' random baseline): the
    thief's own data is never sent."""

    def __call__(self, x, gen):
        return (torch.rand(x.shape, generator=gen) * self.span + self.low).to(x.device)


@QUERIES.register("natural")
class Natural(QuerySource):
    """Out-of-distribution natural images, as in Knockoff Nets (Orekondy et al. CVPR 2019): ``pool`` random crops
    of the photographs scikit-learn ships, resized to the input shape (rows of them for signals), matched to the
    thief's input mean and deviation; each batch draws from them. The thief's own data is never sent."""

    def __init__(self, pool: int = 4096):
        self.pool = pool

    def bind(self, pool: torch.Tensor) -> QuerySource:
        super().bind(pool)
        from sklearn.datasets import load_sample_images

        photos = [torch.tensor(i, dtype=torch.float32).permute(2, 0, 1) / 255 for i in load_sample_images().images]
        gen = torch.Generator().manual_seed(0)  # the thief's photo collection, the same for every thief
        crops = []
        for _ in range(self.pool):
            img = photos[int(torch.randint(0, len(photos), (1,), generator=gen))]
            s = int(torch.randint(16, 129, (1,), generator=gen))
            top, left = (int(torch.randint(0, m - s + 1, (1,), generator=gen)) for m in img.shape[1:])
            crops.append(self._resize(img[:, top : top + s, left : left + s], gen))
        z = torch.stack(crops)
        z = (z - z.flatten(1).mean(1).view(-1, *([1] * (z.ndim - 1)))) / z.flatten(1).std(1).clamp_min(1e-6).view(
            -1, *([1] * (z.ndim - 1))
        )
        self.images = (z * self.std + self.mean).clamp(self.low, self.high)
        return self

    def _resize(self, crop: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        c = self.shape[0]
        img = crop if c == 3 else crop.mean(0, keepdim=True).expand(c, -1, -1)
        if len(self.shape) == 3:
            return F.interpolate(img[None], size=self.shape[1:], mode="area")[0]
        if len(self.shape) == 2:  # a signal: one row of the crop
            row = int(torch.randint(0, img.shape[1], (1,), generator=gen))
            return F.interpolate(img[None, :, row], size=self.shape[1], mode="linear", align_corners=False)[0]
        flat = img[0].flatten()  # tabular: consecutive pixels
        return F.interpolate(flat[None, None], size=self.shape[0], mode="linear", align_corners=False)[0, 0]

    def __call__(self, x, gen):
        return self.images[torch.randint(0, len(self.images), (len(x),), generator=gen)].to(x.device)
