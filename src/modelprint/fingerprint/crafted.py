"""Samplers that optimise their queries by gradient on the owner and on helper models: ModelDiff's adversarial
pairs, IPGuard's boundary points and CAE's conferrable examples (they need the owner as a torch module)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..access import WhiteBox
from ..errors import ConfigError
from ..nets import head
from .queries import SAMPLERS, Context, Queries, Sampler


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


@SAMPLERS.register("adversarial")
class Adversarial(Sampler):
    """ModelDiff's pairs: budget/2 seeds, each followed by its untargeted PGD adversarial example on the owner
    (L-infinity radius ``eps`` of the input range)."""

    layout, gradients = "pairs", True

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


@SAMPLERS.register("deepjudge")
class DeepJudgeTests(Sampler):
    """DeepJudge's black-box test cases (Chen et al., S&P 2022): PGD adversarial examples of the owner (L-infinity
    radius ``eps`` of the input range) from held-out seeds it classifies correctly, kept with the seeds' labels
    for the robustness distance (RobD) and compared whole for the output divergence (JSD). Deviation: the seeds
    are drawn at random (the paper draws them per class)."""

    gradients = True

    def __init__(self, eps: float = 0.1, steps: int = 10):
        self.eps, self.steps = eps, steps

    def sample(self, ctx: Context) -> Queries:
        module = ctx.owner_module(self)
        right = torch.nonzero(ctx.owner.labels(ctx.x) == ctx.y).flatten()
        if len(right) < ctx.budget:
            raise ConfigError(
                f"the owner classifies {len(right)} held-out inputs right, fewer than the budget {ctx.budget}"
            )
        pick = right[torch.randperm(len(right), generator=ctx.gen)[: ctx.budget]]
        seeds, labels = ctx.x[pick], ctx.y[pick]
        adv = pgd(module, seeds, labels, self.eps * ctx.span, self.steps, ctx.gen, ctx.low, ctx.high, ctx.device)
        return Queries(adv, aux={"labels": labels})


@SAMPLERS.register("boundary")
class Boundary(Sampler):
    """IPGuard's points near the owner's decision boundary: from each seed (owner's class i, random target j != i),
    Adam on ReLU(Z_i - Z_j + k) + ReLU(max_{t != i, j} Z_t - Z_i) until j wins by margin k with i runner-up."""

    gradients = True

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
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        kept = x.detach().clone()
        for _ in range(self.steps):
            z = module(x)
            zi, zj = z.gather(1, i), z.gather(1, j)
            rest = z.masked_fill(both, -math.inf).max(1, keepdim=True).values  # -inf, not 0: logits can be < 0
            loss = (F.relu(zi - zj + self.k) + F.relu(rest - zi)).squeeze(1)
            new = (loss <= 0) & ~done
            kept[new] = x.detach()[new]
            done |= new
            if done.all():
                break
            (x.grad,) = torch.autograd.grad(loss.sum(), x)
            opt.step()
            with torch.no_grad():  # a point that met the margin stays there (Adam's momentum would move it on)
                x[done] = kept[done]
        return Queries(x.detach().cpu())


@SAMPLERS.register("conferrable")
class Conferrable(Sampler):
    """Conferrable adversarial examples (Lukas et al. ICLR 2021): perturbations within ``eps`` of the input range
    of inputs the owner classifies correctly, minimising
    ``alpha * H(1, max_c E_c(x')) - beta * H(M(x), M(x')) + gamma * H(M(x'), S(x'))`` where
    ``E = mean_surrogates p * (1 - mean_references p)`` is the conferrability, M the owner and S the surrogates'
    mean: transferable to the owner's surrogates, not to independent models, and adversarial for the owner.
    Kept, as in the paper: examples the owner now misclassifies with conferrability >= ``tau``, most conferrable
    first; when fewer pass, the budget is filled with the most conferrable of those the owner misclassifies, then
    of the rest. Deviations: a black-box owner drops the two owner terms; no dropout on ensemble members."""

    def __init__(
        self,
        eps: float = 0.15,
        steps: int = 100,
        lr: float = 0.01,
        candidates: int = 2,
        references: int = 6,
        surrogates: int = 6,
        alpha: float = 1.0,
        beta: float = 1.0,
        gamma: float = 1.0,
        tau: float = 0.85,
    ):
        self.eps, self.steps, self.lr, self.candidates = eps, steps, lr, candidates
        self.references, self.surrogates = references, surrogates
        self.alpha, self.beta, self.gamma, self.tau = alpha, beta, gamma, tau

    def sample(self, ctx: Context) -> Queries:
        if self.references < 1 or self.surrogates < 1:
            raise ConfigError("conferrable examples need at least one reference and one surrogate model")
        refs = [m.to(ctx.device).eval() for m in ctx.models("references", self.references)]
        surr = [m.to(ctx.device).eval() for m in ctx.models("surrogates", self.surrogates)]
        owner = ctx.owner.module if isinstance(ctx.owner, WhiteBox) else None
        right = torch.nonzero(ctx.owner.labels(ctx.x) == ctx.y).flatten()
        pool = right if len(right) >= ctx.budget else torch.arange(len(ctx.x))
        n = min(len(pool), self.candidates * ctx.budget)
        x0 = ctx.x[pool[torch.randperm(len(pool), generator=ctx.gen)[:n]]].to(ctx.device)
        y0 = ctx.owner.labels(x0.cpu()).to(ctx.device)  # the true labels, on inputs the owner classifies right
        eps = self.eps * ctx.span
        delta = torch.zeros_like(x0, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=self.lr * ctx.span)

        def conferrability(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            ps = torch.stack([m(x).softmax(1) for m in surr]).mean(0)
            pr = torch.stack([m(x).softmax(1) for m in refs]).mean(0)
            return (ps * (1 - pr)).max(1).values, ps

        for _ in range(self.steps):
            x = x0 + delta
            conf, ps = conferrability(x)
            loss = -self.alpha * (conf + 1e-12).log()
            if owner is not None:
                out = owner(x)
                loss = loss - self.beta * F.cross_entropy(out, y0, reduction="none")
                loss = loss - self.gamma * (ps.detach() * out.log_softmax(1)).sum(1)  # H(S(x'), M(x'))
            (delta.grad,) = torch.autograd.grad(loss.sum(), delta)
            opt.step()
            with torch.no_grad():
                delta.copy_((x0 + delta.clamp(-eps, eps)).clamp(ctx.low, ctx.high) - x0)
        x = (x0 + delta).detach()
        with torch.no_grad():
            conf, _ = conferrability(x)
        x, conf = x.cpu(), conf.cpu()
        wrong = ctx.owner.labels(x) != y0.cpu()
        passed = wrong & (conf >= self.tau)
        # the examples that pass the paper's filter come first, then those the owner gets wrong, most conferrable first
        rank = conf + wrong.float() + passed.float() * 2.0
        return Queries(x[rank.argsort(descending=True)[: ctx.budget]])


def sensitivity(module: nn.Module, x: torch.Tensor, top: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SSF's objective per input: ``||d p_top / d (W, b)||^2`` of the last linear layer, in closed form
    ``p_t^2 ||e_t - p||^2 (||h||^2 + 1)`` (h: the layer's input), and h itself (for activation coverage)."""
    _, last = head(module)
    seen: list[torch.Tensor] = []
    hook = last.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0]))
    try:
        p = module(x).softmax(1)
    finally:
        hook.remove()
    h = seen[-1].flatten(1)
    pt = p.gather(1, top[:, None]).squeeze(1)
    away = (F.one_hot(top, p.shape[1]).to(p.dtype) - p).pow(2).sum(1)
    return pt.pow(2) * away * (h.pow(2).sum(1) + 1), h


def sensitive_samples(
    module: nn.Module, seeds: torch.Tensor, budget: int, eps: float, steps: int, low: float, high: float
) -> torch.Tensor:
    """SSF (He et al., CVPR 2019): from natural ``seeds``, signed-gradient ascent on ``sensitivity`` within an
    L-infinity ball of radius ``eps`` (and the input range), so the inputs stay natural-looking; then a greedy
    choice of ``budget`` of them that covers the most penultimate units not yet active (SSF's maximum
    active-neuron cover), the most sensitive first."""
    device = next(module.parameters()).device
    x0 = seeds.to(device)
    with torch.no_grad():
        top = module(x0).argmax(1)
    delta, step = torch.zeros_like(x0), 2.5 * eps / max(steps, 1)
    for _ in range(steps):
        delta.requires_grad_(True)
        (g,) = torch.autograd.grad(sensitivity(module, x0 + delta, top)[0].log1p().sum(), delta)
        delta = (delta.detach() + step * g.sign()).clamp(-eps, eps)
        delta = (x0 + delta).clamp(low, high) - x0
    x = (x0 + delta).detach()
    with torch.no_grad():
        score, h = sensitivity(module, x, top)
    active = h > h.mean(0)  # a unit is active on an input when above its mean over the candidates
    covered = torch.zeros(h.shape[1], dtype=torch.bool, device=device)
    chosen: list[int] = []
    for _ in range(min(budget, len(x))):
        gain = (active & ~covered).sum(1).float()
        gain[chosen] = -1.0
        best = torch.nonzero(gain == gain.max()).flatten()
        pick = int(best[score[best].argmax()])
        chosen.append(pick)
        covered |= active[pick]
        if covered.all():
            covered[:] = False  # every unit covered: start a new round of coverage
    return x[chosen].cpu()


@SAMPLERS.register("sensitive")
class Sensitive(Sampler):
    """SSF's sensitive samples (He et al., CVPR 2019): natural inputs nudged (L-infinity radius ``eps`` of the
    input range) to maximise how much the owner's top probability moves with its last layer's weights, chosen
    for activation coverage from ``pool`` times the budget. For integrity (an exact match), not derivation."""

    gradients = True

    def __init__(self, eps: float = 0.05, steps: int = 20, pool: int = 4):
        self.eps, self.steps, self.pool = eps, steps, pool

    def sample(self, ctx: Context) -> Queries:
        module = ctx.owner_module(self).eval()
        seeds = ctx.x[ctx.pick(min(len(ctx.x), self.pool * ctx.budget))]
        x = sensitive_samples(module, seeds, ctx.budget, self.eps * ctx.span, self.steps, ctx.low, ctx.high)
        return Queries(x)
