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
            raise AccessError(f"sampler {who.spec()} needs the owner's gradients: pass the owner as a torch module")
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


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each input flipped along one random spatial axis, or left as it is."""
    out, dims = x.clone(), spatial_dims(x)
    choice = torch.randint(0, len(dims) + 1, (len(x),), generator=gen)
    for k, d in enumerate(dims):
        sel = choice == k
        out[sel] = x[sel].flip(d - 1)
    return out


def pgd(
    module: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    gen: torch.Generator,
    low: float,
    high: float,
    device: str = "cpu",
) -> torch.Tensor:
    """Untargeted L-infinity PGD with a random start (Madry et al.), step 2.5 eps / steps, inputs kept in range."""
    x, y = x.to(device), y.to(device)
    delta = ((torch.rand(x.shape, generator=gen) * 2 - 1) * eps).to(device)
    step = 2.5 * eps / max(steps, 1)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(module(x + delta), y)
        (g,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + step * g.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(low, high) - x
    return (x + delta).detach().cpu()


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


@SAMPLERS.register("adversarial")
class Adversarial(Sampler):
    """ModelDiff's pairs: budget/2 seeds, each followed by its untargeted PGD adversarial example on the owner
    (L-infinity radius ``eps`` of the input range)."""

    layout = "pairs"

    def __init__(self, eps: float = 0.03, steps: int = 10):
        self.eps, self.steps = eps, steps

    def check_budget(self, budget: int) -> None:
        if budget < 2 or budget % 2:
            raise ConfigError(
                f"adversarial queries come in (seed, adversarial) pairs: the budget must be even, got {budget}"
            )

    def sample(self, ctx: Context) -> Queries:
        module = ctx.owner_module(self)
        seeds = ctx.x[ctx.pick(ctx.budget // 2)]
        adv = pgd(
            module,
            seeds,
            ctx.owner.labels(seeds),
            self.eps * ctx.span,
            self.steps,
            ctx.gen,
            ctx.low,
            ctx.high,
            ctx.device,
        )
        return Queries(torch.stack([seeds, adv], 1).flatten(0, 1), "pairs", 2)


@SAMPLERS.register("boundary")
class Boundary(Sampler):
    """IPGuard's points near the owner's decision boundary: from each seed (owner's class i, random target j != i),
    Adam on ReLU(Z_i - Z_j + k) + ReLU(max_{t != i, j} Z_t - Z_i) until j wins by margin k with i runner-up."""

    def __init__(self, k: float = 10.0, lr: float = 0.01, steps: int = 1000):
        self.k, self.lr, self.steps = k, lr, steps

    def sample(self, ctx: Context) -> Queries:
        module = ctx.owner_module(self)
        x = ctx.x[ctx.pick(ctx.budget)].to(ctx.device)
        with torch.no_grad():
            logits = module(x)
        c = logits.shape[1]
        i = logits.argmax(1, keepdim=True)
        j = (i + torch.randint(1, c, i.shape, generator=ctx.gen).to(ctx.device)) % c  # never equal to i
        both = torch.zeros_like(logits, dtype=torch.bool).scatter(1, i, True).scatter(1, j, True)
        x.requires_grad_(True)
        opt = torch.optim.Adam([x], lr=self.lr)
        for _ in range(self.steps):
            z = module(x)
            zi, zj = z.gather(1, i), z.gather(1, j)
            rest = z.masked_fill(both, -math.inf).max(1, keepdim=True).values  # -inf, not 0: logits can be < 0
            loss = F.relu(zi - zj + self.k) + F.relu(rest - zi)
            if not (loss > 0).any():
                break
            (x.grad,) = torch.autograd.grad(loss.sum(), x)
            opt.step()
        return Queries(x.detach().cpu())


@SAMPLERS.register("lime")
class Lime(Sampler):
    """ZestOfLIME's queries: budget/``samples`` reference inputs, each with ``samples`` random on/off masks over
    ``segments`` fixed patches (the first mask keeps everything); hidden patches take the data's mean."""

    layout = "groups"

    def __init__(self, samples: int = 10, segments: int = 16):
        self.samples, self.segments = samples, segments

    def check_budget(self, budget: int) -> None:
        if budget < self.samples or budget % self.samples:
            raise ConfigError(
                f"lime sends {self.samples} masked variants per reference input: "
                f"the budget must be a multiple of {self.samples}, got {budget}"
            )

    def sample(self, ctx: Context) -> Queries:
        n, m = ctx.budget // self.samples, self.samples
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
    """SAC-m's queries: held-out inputs with a box of another one pasted in (``size`` of each side)."""

    def __init__(self, size: float = 0.2):
        self.size = size

    def sample(self, ctx: Context) -> Queries:
        a, b = (torch.randint(0, len(ctx.x), (ctx.budget,), generator=ctx.gen) for _ in range(2))
        return Queries(cutmix(ctx.x[a], ctx.x[b], self.size, ctx.gen))


@SAMPLERS.register("benign-entropy")
class BenignEntropy(Sampler):
    """FBI's benign inputs: unmodified held-out inputs on which a population (the owner and ``references``
    independent models) disagrees most, ranked by the entropy of their labels."""

    def __init__(self, references: int = 4):
        self.references = references

    def sample(self, ctx: Context) -> Queries:
        models = ctx.models("references", self.references)
        votes = torch.stack([ctx.owner.labels(ctx.x)] + [WhiteBox(m, device=ctx.device).labels(ctx.x) for m in models])
        counts = F.one_hot(votes, ctx.owner.num_classes).sum(0).float()
        p = counts / counts.sum(1, keepdim=True)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(1)
        jitter = torch.rand(len(entropy), generator=ctx.gen) * 1e-6  # random order among equal entropies
        if ctx.budget > len(ctx.x):
            ctx.pick(ctx.budget)  # raises the budget error
        return Queries(ctx.x[(entropy + jitter).argsort(descending=True)[: ctx.budget]])


@SAMPLERS.register("conferrable")
class Conferrable(Sampler):
    """Conferrable adversarial examples (Lukas et al. ICLR 2021): perturbations within ``eps`` of the input range
    that label-extraction surrogates of the owner share and independent references do not, found by maximising
    max_c [mean_surrogates p_c (1 - mean_references p_c)] (plus agreement of a white-box owner with the surrogates).
    Of ``candidates`` x budget optimised inputs, those the owner labels like the surrogates and with the highest
    conferrability are kept."""

    def __init__(
        self,
        eps: float = 0.1,
        steps: int = 50,
        lr: float = 0.01,
        candidates: int = 2,
        references: int = 4,
        surrogates: int = 2,
    ):
        self.eps, self.steps, self.lr, self.candidates = eps, steps, lr, candidates
        self.references, self.surrogates = references, surrogates

    def sample(self, ctx: Context) -> Queries:
        if self.references < 1 or self.surrogates < 1:
            raise ConfigError("conferrable examples need at least one reference and one surrogate model")
        refs = [m.to(ctx.device).eval() for m in ctx.models("references", self.references)]
        surr = [m.to(ctx.device).eval() for m in ctx.models("surrogates", self.surrogates)]
        if isinstance(ctx.owner, WhiteBox):
            surr.append(ctx.owner.module)
        n = min(len(ctx.x), self.candidates * ctx.budget)
        x0 = ctx.x[ctx.pick(n)].to(ctx.device)
        eps = self.eps * ctx.span
        delta = torch.zeros_like(x0, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=self.lr * ctx.span)

        def conferrability(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            ps = torch.stack([m(x).softmax(1) for m in surr]).mean(0)
            pr = torch.stack([m(x).softmax(1) for m in refs]).mean(0)
            return (ps * (1 - pr)).max(1).values, ps, pr

        for _ in range(self.steps):
            conf, _, _ = conferrability(x0 + delta)
            (delta.grad,) = torch.autograd.grad(-(conf + 1e-12).log().sum(), delta)
            opt.step()
            with torch.no_grad():
                delta.copy_((x0 + delta.clamp(-eps, eps)).clamp(ctx.low, ctx.high) - x0)
        x = (x0 + delta).detach()
        with torch.no_grad():
            conf, ps, pr = conferrability(x)
        x = x.cpu()
        shared = (ctx.owner.labels(x) == ps.argmax(1).cpu()) & (ps.argmax(1) != pr.argmax(1)).cpu()
        rank = conf.cpu() + shared.float() * 2.0  # inputs the owner labels like its surrogates come first
        return Queries(x[rank.argsort(descending=True)[: ctx.budget]])


@SAMPLERS.register("divergent")
class Divergent(Sampler):
    """Natural-looking inputs on which the owner is idiosyncratic: of ``candidates`` x budget mixup and CutMix
    blends of held-out inputs, those where the owner's label is shared by its label-extraction surrogates and
    not by independent reference models (modelprint's generalisation of AKH's misclassified inputs)."""

    def __init__(self, candidates: int = 10, references: int = 4, surrogates: int = 2, size: float = 0.5):
        self.candidates, self.references, self.surrogates, self.size = candidates, references, surrogates, size

    def sample(self, ctx: Context) -> Queries:
        if self.references < 1:
            raise ConfigError("divergent inputs need at least one reference model")
        n = self.candidates * ctx.budget
        a, b = (torch.randint(0, len(ctx.x), (n,), generator=ctx.gen) for _ in range(2))
        half = n // 2
        x = torch.cat(
            [
                mixup(ctx.x[a[:half]], ctx.x[b[:half]], ctx.gen),
                cutmix(ctx.x[a[half:]], ctx.x[b[half:]], self.size, ctx.gen),
            ]
        )
        own = ctx.owner.labels(x)
        score = _agreement(ctx.models("surrogates", self.surrogates), x, own, ctx.device)
        score = score - _agreement(ctx.models("references", self.references), x, own, ctx.device)
        score = score + torch.rand(n, generator=ctx.gen) * 1e-6  # random order among ties
        return Queries(x[score.argsort(descending=True)[: ctx.budget]])
