"""Query samplers: which inputs a fingerprint sends to the suspect. Each is a small class whose constructor
stores its parameters; ``sample(ctx)`` draws ``ctx.budget`` inputs, deterministic given ``ctx.gen``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..access import Model, WhiteBox
from ..base import Params, Registry
from ..errors import AccessError, ConfigError

Layout = Literal["flat", "pairs", "groups"]
SAMPLERS: Registry[Sampler] = Registry("query sampler")


@dataclass
class Queries:
    """The inputs of a fingerprint, in units the representation reads together: single inputs (``flat``),
    (seed, variant) ``pairs``, or ``groups`` of masked variants of one reference input (with their masks)."""

    x: torch.Tensor
    layout: Layout = "flat"
    unit: int = 1  # inputs per unit
    aux: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Context:
    """What a sampler may use: the owner, a pool of held-out inputs with their true labels, the budget, a seeded
    generator, and builders of independent reference models and label-extraction surrogates of the owner."""

    owner: Model
    x: torch.Tensor
    y: torch.Tensor
    budget: int
    gen: torch.Generator
    device: str = "cpu"
    references: Callable[[int], list[nn.Module]] | None = None
    surrogates: Callable[[int], list[nn.Module]] | None = None

    @property
    def low(self) -> float:
        return float(self.x.min())

    @property
    def high(self) -> float:
        return float(self.x.max())

    @property
    def span(self) -> float:  # perturbation radii are relative to the input range
        return (self.high - self.low) or 1.0

    def owner_module(self, who: Sampler) -> nn.Module:
        if not isinstance(self.owner, WhiteBox):
            from .schemes import NAMED, make_scheme

            answers = [n for n in NAMED if not make_scheme(n).sampler.gradients]
            raise AccessError(
                f"sampler {who.spec()} needs the owner's gradients, which an ONNX file or an API does not give: "
                "pass the owner as a torch module (TorchScript, or weights with --arch), or take a scheme whose "
                f"queries need only the owner's answers: {', '.join(answers)}"
            )
        return self.owner.module

    def pick(self, k: int, what: str = "pool inputs") -> torch.Tensor:
        """``k`` distinct random indices of the pool."""
        if k > len(self.x):
            raise ConfigError(f"a budget of {self.budget} needs {k} {what}, but the data has only {len(self.x)}")
        return torch.randperm(len(self.x), generator=self.gen)[:k]

    def models(self, kind: Literal["references", "surrogates"], n: int) -> list[nn.Module]:
        build = getattr(self, kind)
        if n and build is None:
            raise ConfigError(f"this sampler needs {n} {kind}; pass {kind}=[...] models (or a registered dataset)")
        return build(n) if n else []


class Sampler(Params):
    """Chooses the inputs of a fingerprint."""

    layout: ClassVar[Layout] = "flat"
    gradients: ClassVar[bool] = False  # crafts its queries with the owner's gradients (needs a torch module)

    def sample(self, ctx: Context) -> Queries:
        raise NotImplementedError

    def check_budget(self, budget: int) -> None:
        if budget < 1:
            raise ConfigError(f"the budget must be at least 1 query, got {budget}")


# --- helpers on batches of inputs -------------------------------------------------------------------------


def spatial_dims(x: torch.Tensor) -> list[int]:
    """Axes of a batch along which an input extends: (N, D) -> [1]; (N, C, L) -> [2]; (N, C, H, W) -> [2, 3]."""
    return [1] if x.ndim == 2 else list(range(2, x.ndim))


def cutmix(a: torch.Tensor, b: torch.Tensor, size: float, gen: torch.Generator) -> torch.Tensor:
    """``a`` with a random box of ``b`` pasted in; the box spans ``size`` of each spatial axis."""
    out = a.clone()
    dims = spatial_dims(a)
    for i in range(len(a)):
        box: list = [i] + [slice(None)] * (dims[0] - 1)
        for d in dims:
            n = a.shape[d]
            w = min(n, max(1, round(size * n)))
            start = int(torch.randint(0, n - w + 1, (1,), generator=gen))
            box.append(slice(start, start + w))
        out[tuple(box)] = b[tuple(box)]
    return out


def mixup(a: torch.Tensor, b: torch.Tensor, gen: torch.Generator, high: float = 0.5) -> torch.Tensor:
    lam = (torch.rand(len(a), generator=gen) * high).view(-1, *([1] * (a.ndim - 1)))
    return (1 - lam) * a + lam * b


def blends(x: torch.Tensor, n: int, size: float, gen: torch.Generator) -> torch.Tensor:
    """``n`` blends of random pairs of ``x``'s rows: the first half mixup, the rest CutMix with boxes of ``size``."""
    a, b = (torch.randint(0, len(x), (n,), generator=gen) for _ in range(2))
    h = n // 2
    return torch.cat([mixup(x[a[:h]], x[b[:h]], gen), cutmix(x[a[h:]], x[b[h:]], size, gen)])


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each input flipped along one random spatial axis, or left as it is."""
    out, dims = x.clone(), spatial_dims(x)
    choice = torch.randint(0, len(dims) + 1, (len(x),), generator=gen)
    for k, d in enumerate(dims):
        sel = choice == k
        out[sel] = x[sel].flip(d - 1)
    return out


def segment_map(shape: tuple[int, ...], segments: int) -> torch.Tensor:
    """Fixed rectangular patches (images) or windows (signals) as LIME's segments: an int map of ``shape``.
    Superpixel algorithms are meaningless on 8x8 digits or 1-D signals, so the segments are a regular grid."""
    spatial = shape[1:] if len(shape) >= 2 else shape
    if len(spatial) == 2:
        h, w = spatial
        gh = max(1, min(h, round(math.sqrt(segments))))
        gw = max(1, min(w, round(segments / gh)))
        seg = (torch.arange(h) * gh // h)[:, None] * gw + (torch.arange(w) * gw // w)[None, :]
    else:
        n = math.prod(spatial)
        g = max(1, min(n, segments))
        seg = (torch.arange(n) * g // n).reshape(spatial)
    return seg.expand(shape).contiguous() if len(shape) >= 2 else seg


def _agreement(models: list[nn.Module], x: torch.Tensor, labels: torch.Tensor, device: str) -> torch.Tensor:
    """Fraction of ``models`` that predict ``labels`` on each input (zeros when there are no models)."""
    if not models:
        return torch.zeros(len(x))
    votes = [WhiteBox(m, device=device).labels(x) == labels for m in models]
    return torch.stack(votes).float().mean(0)


# --- the samplers ------------------------------------------------------------------------------------------


@SAMPLERS.register("random")
class RandomInputs(Sampler):
    """Inputs drawn uniformly from the held-out data."""

    def sample(self, ctx: Context) -> Queries:
        return Queries(ctx.x[ctx.pick(ctx.budget)])


@SAMPLERS.register("negative")
class Negative(Sampler):
    """Inputs the owner misclassifies (AKH). When there are fewer than the budget, ``augment`` pads them with
    CutMix blends of two of them, randomly flipped."""

    def __init__(self, augment: bool = True, size: float = 0.5):
        self.augment, self.size = augment, size

    def sample(self, ctx: Context) -> Queries:
        wrong = ctx.x[ctx.owner.labels(ctx.x) != ctx.y]
        wrong = wrong[torch.randperm(len(wrong), generator=ctx.gen)]
        if len(wrong) >= ctx.budget:
            return Queries(wrong[: ctx.budget])
        if not self.augment or len(wrong) == 0:
            raise ConfigError(
                f"the owner misclassifies {len(wrong)} of {len(ctx.x)} inputs, fewer than the budget {ctx.budget}; "
                + ("use negative(augment=true) or a smaller budget" if len(wrong) else "use another sampler")
            )
        need = ctx.budget - len(wrong)
        i, j = (torch.randint(0, len(wrong), (need,), generator=ctx.gen) for _ in range(2))
        extra = random_flip(cutmix(wrong[i], wrong[j], self.size, ctx.gen), ctx.gen)
        return Queries(torch.cat([wrong, extra]))


@SAMPLERS.register("lime")
class Lime(Sampler):
    """Zest's queries (Jia et al. 2022): reference inputs, each with ``samples`` random on/off masks over
    ``segments`` fixed patches (the first mask keeps everything); hidden patches take the data's mean (zero in
    the paper's normalised space). The paper spends 1000 masks on each of 128 references; ``samples=0`` spends
    min(1000, budget) per reference, as many references as the budget allows. Deviation: a regular grid of
    segments instead of quickshift superpixels, which mean nothing on 8x8 digits or 1-D signals."""

    layout = "groups"

    def __init__(self, samples: int = 0, segments: int = 16):
        self.samples, self.segments = samples, segments

    def per_reference(self, budget: int) -> int:
        return self.samples or min(1000, budget)

    def check_budget(self, budget: int) -> None:
        m = self.per_reference(budget)
        if budget < m or budget % m:
            raise ConfigError(
                f"lime sends {m} masked variants per reference input: the budget must be a multiple of {m}, "
                f"got {budget}"
            )

    def sample(self, ctx: Context) -> Queries:
        m = self.per_reference(ctx.budget)
        n = ctx.budget // m
        refs = ctx.x[ctx.pick(n, "reference inputs")]
        seg = segment_map(tuple(ctx.x.shape[1:]), self.segments)
        s = int(seg.max()) + 1
        masks = (torch.rand(n, m, s, generator=ctx.gen) < 0.5).float()
        masks[:, 0] = 1
        keep = masks[:, :, seg] > 0  # (n, m, *input_shape)
        x = torch.where(keep, refs[:, None], ctx.x.mean(0))
        return Queries(x.flatten(0, 1), "groups", m, {"masks": masks})


@SAMPLERS.register("cutmix")
class CutMix(Sampler):
    """SAC-m's queries (Guan et al. NeurIPS 2022): held-out inputs with a box of another one pasted in, the box
    ``size`` of each side. As in SAC's code, one box serves every query and its centre lies in the outer sixths
    of each axis (near the corners); ``corners=false`` draws a box anywhere for each query."""

    def __init__(self, size: float = 0.2, corners: bool = True):
        self.size, self.corners = size, corners

    def sample(self, ctx: Context) -> Queries:
        a, b = (torch.randint(0, len(ctx.x), (ctx.budget,), generator=ctx.gen) for _ in range(2))
        if not self.corners:
            return Queries(cutmix(ctx.x[a], ctx.x[b], self.size, ctx.gen))
        out, dims = ctx.x[a].clone(), spatial_dims(ctx.x)
        box: list = [slice(None)] * dims[0]
        for d in dims:
            n = ctx.x.shape[d]
            w = min(n, max(1, round(self.size * n)))
            outer = [c for c in range(n) if c < n / 6 or c >= 5 * n / 6] or list(range(n))
            centre = outer[int(torch.randint(0, len(outer), (1,), generator=ctx.gen))]
            start = min(max(0, centre - w // 2), n - w)
            box.append(slice(start, start + w))
        out[tuple(box)] = ctx.x[b][tuple(box)]
        return Queries(out)


@SAMPLERS.register("benign-entropy")
class BenignEntropy(Sampler):
    """FBI's benign inputs (Maho et al. 2023): unmodified held-out inputs on which a population (the owner and
    ``references`` independent models) disagrees, ranked by the entropy of their labels; the queries are drawn at
    random from the most entropic ``fraction`` (the top ones when that leaves fewer than the budget, as with 0).
    Their true labels are kept for the label-rank representation."""

    def __init__(self, references: int = 4, fraction: float = 0.2):
        self.references, self.fraction = references, fraction

    def sample(self, ctx: Context) -> Queries:
        if ctx.budget > len(ctx.x):
            ctx.pick(ctx.budget)  # raises the budget error
        models = ctx.models("references", self.references)
        votes = torch.stack([ctx.owner.labels(ctx.x)] + [WhiteBox(m, device=ctx.device).labels(ctx.x) for m in models])
        counts = F.one_hot(votes, ctx.owner.num_classes).sum(0).float()
        p = counts / counts.sum(1, keepdim=True)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(1)
        jitter = torch.rand(len(entropy), generator=ctx.gen) * 1e-6  # random order among equal entropies
        top = (entropy + jitter).argsort(descending=True)[: max(ctx.budget, round(self.fraction * len(ctx.x)))]
        pick = top[torch.randperm(len(top), generator=ctx.gen)[: ctx.budget]]
        return Queries(ctx.x[pick], aux={"labels": ctx.y[pick]})


@SAMPLERS.register("divergent")
class Divergent(Sampler):
    """Natural-looking inputs on which the owner is idiosyncratic: of ``candidates`` x budget mixup and CutMix
    blends of held-out inputs, those where the owner's label is shared by its label-extraction surrogates and
    not by independent reference models (modelprint's generalisation of AKH's misclassified inputs). A blend's
    score is the surrogates' agreement with the owner less ``contrast`` times the references'; a contrast above 1
    prefers blends the population almost never answers as the owner does, on which independent models score
    alike (a narrower null) while derived models still follow the owner."""

    def __init__(
        self, candidates: int = 10, references: int = 4, surrogates: int = 2, size: float = 0.5, contrast: float = 1.0
    ):
        self.candidates, self.references, self.surrogates, self.size = candidates, references, surrogates, size
        self.contrast = contrast

    def sample(self, ctx: Context) -> Queries:
        if self.references < 1:
            raise ConfigError("divergent inputs need at least one reference model")
        if not self.contrast >= 0:
            raise ConfigError(f"divergent inputs need a contrast of at least 0, not {self.contrast}")
        n = self.candidates * ctx.budget
        x = blends(ctx.x, n, self.size, ctx.gen)
        own = ctx.owner.labels(x)
        score = _agreement(ctx.models("surrogates", self.surrogates), x, own, ctx.device)
        refs = [WhiteBox(m, device=ctx.device).labels(x) for m in ctx.models("references", self.references)]
        score = score - self.contrast * torch.stack([r == own for r in refs]).float().mean(0)
        score = score + torch.rand(n, generator=ctx.gen) * 1e-6  # random order among ties
        keep = score.argsort(descending=True)[: ctx.budget]
        # the population's answers on each query, for the preference representation
        return Queries(x[keep], aux={"owner": own[keep], "references": torch.stack(refs, 1)[keep]})
