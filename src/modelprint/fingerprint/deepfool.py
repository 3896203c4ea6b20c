"""Samplers built on DeepFool (Moosavi-Dezfooli et al., CVPR 2016), the smallest step across the owner's nearest
decision boundary: DeepFool's boundary points (Wang & Chang, ISCAS 2021) and universal adversarial
perturbations (Moosavi-Dezfooli et al., CVPR 2017) as in Peng et al.'s UAP fingerprint (CVPR 2022)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .queries import SAMPLERS, Context, Queries, Sampler


def deepfool(
    module: nn.Module, x: torch.Tensor, steps: int = 50, overshoot: float = 0.02, chunk: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-class L2 DeepFool on a batch: at each step the classifier is linearised around the current point
    and the point moves to the nearest linearised boundary between its original class k0 and any other class k,
    ``r = (|f_k - f_k0| / ||w_k - w_k0||^2) (w_k - w_k0)``; the total step is scaled by ``1 + overshoot`` so the
    point lands just across. Returns the total perturbation and whether the label changed within ``steps``."""
    device = next(module.parameters()).device
    rs, flipped = [], []
    for x0 in x.split(chunk):
        r, done = _deepfool_chunk(module, x0.to(device), steps, overshoot)
        rs.append(r.cpu())
        flipped.append(done.cpu())
    return torch.cat(rs), torch.cat(flipped)


def _deepfool_chunk(module: nn.Module, x0: torch.Tensor, steps: int, overshoot: float):
    with torch.no_grad():
        k0 = module(x0).argmax(1)
    r_total = torch.zeros_like(x0)
    done = torch.zeros(len(x0), dtype=torch.bool, device=x0.device)
    rows = torch.arange(len(x0), device=x0.device)
    for _ in range(steps):
        x = (x0 + (1 + overshoot) * r_total).requires_grad_(True)
        z = module(x)
        done = z.argmax(1) != k0
        if done.all():
            break
        c = z.shape[1]
        # the gradient of every class score: one backward pass per class (c is small for classifiers)
        grads = torch.stack(
            [torch.autograd.grad(z[:, k].sum(), x, retain_graph=k < c - 1)[0].flatten(1) for k in range(c)], 1
        )
        w = grads - grads[rows, k0][:, None]  # (n, c, d)
        f = (z - z[rows, k0][:, None]).detach()  # (n, c), <= 0 while the label is k0
        norm = w.norm(dim=2).clamp_min(1e-12)
        dist = f.abs() / norm
        dist[rows, k0] = float("inf")
        best = dist.argmin(1)
        wl, nl = w[rows, best], norm[rows, best]
        step = ((f[rows, best].abs() + 1e-4) / nl.pow(2))[:, None] * wl
        r_total = r_total + torch.where(done[:, None], 0.0, step).view_as(x0)
    with torch.no_grad():
        done = module(x0 + (1 + overshoot) * r_total).argmax(1) != k0
    return (1 + overshoot) * r_total.detach(), done


@SAMPLERS.register("deepfool")
class DeepFoolPoints(Sampler):
    """DeepFool fingerprints (Wang & Chang, ISCAS 2021): held-out inputs moved by DeepFool just across the
    owner's nearest decision boundary (``overshoot``), where a copy keeps the owner's new label and an
    independent model, whose boundary lies elsewhere, mostly does not. Inputs DeepFool cannot flip within its
    steps are replaced by others from ``pool`` x budget seeds. Deviation: the adversarial points are clipped to
    the data's range (the paper leaves them unbounded)."""

    gradients = True

    def __init__(self, overshoot: float = 0.02, steps: int = 50, pool: int = 2):
        self.overshoot, self.steps, self.pool = overshoot, steps, pool

    def sample(self, ctx: Context) -> Queries:
        module = ctx.owner_module(self).eval()
        seeds = ctx.x[ctx.pick(min(len(ctx.x), max(ctx.budget, self.pool * ctx.budget)))]
        r, _ = deepfool(module, seeds, self.steps, self.overshoot)
        x = (seeds + r).clamp(ctx.low, ctx.high)
        flipped = ctx.owner.labels(x) != ctx.owner.labels(seeds)
        order = torch.argsort((~flipped).float(), stable=True)  # flipped points first, in random seed order
        if len(x) < ctx.budget:
            ctx.pick(ctx.budget)  # raises the budget error
        return Queries(x[order[: ctx.budget]])


def universal_perturbation(
    module: nn.Module,
    x: torch.Tensor,
    xi: float,
    target: float = 0.8,
    passes: int = 5,
    low: float = -float("inf"),
    high: float = float("inf"),
    gen: torch.Generator | None = None,
) -> tuple[torch.Tensor, float]:
    """Moosavi-Dezfooli et al.'s universal perturbation: one ``v`` with ``||v||_inf <= xi`` that changes the
    label of most inputs. Pass over ``x`` in random order; wherever ``x_i + v`` keeps its label, add DeepFool's
    step from ``x_i + v`` and project back onto the ball; stop when the fooling rate reaches ``target`` or after
    ``passes``. Returns ``v`` and its fooling rate on ``x``."""
    device = next(module.parameters()).device
    x = x.to(device)
    with torch.no_grad():
        labels = module(x).argmax(1)
    v = torch.zeros_like(x[:1])

    def fooling() -> float:
        with torch.no_grad():
            return float((module((x + v).clamp(low, high)).argmax(1) != labels).float().mean())

    rate = 0.0
    for _ in range(passes):
        for i in torch.randperm(len(x), generator=gen).tolist():
            xv = (x[i : i + 1] + v).clamp(low, high)
            with torch.no_grad():
                if module(xv).argmax(1) != labels[i]:
                    continue
            r, flipped = _deepfool_chunk(module, xv, 10, 0.02)
            if flipped.all():
                v = (v + r).clamp(-xi, xi)
        rate = fooling()
        if rate >= target:
            break
    return v.detach().cpu(), rate


@SAMPLERS.register("uap")
class UAP(Sampler):
    """The UAP fingerprint's queries (Peng et al., CVPR 2022): a universal adversarial perturbation ``v`` of the
    owner (L-infinity radius ``xi`` of the input range, built on ``pool`` held-out inputs), and budget/2 inputs
    spread over the data (the held-out input nearest each k-means centre) as (x, x + v) pairs: how the owner's
    answers move under its own most damaging direction, over the whole input space.

    With ``surrogates`` > 0 it also trains the paper's encoder, by supervised contrastive learning (Khosla et
    al. 2020) on the fingerprints (outputs on every query, concatenated) of the owner and its surrogates (one
    class) and of ``references`` independent models (a class each), ``views`` views per model with a random
    fifth of the pairs hidden; the ``encoded`` representation reads it from the fingerprint. Deviation: the
    paper trains on the owner's own pirated and independent models; here on modelprint's helper models."""

    layout, gradients = "pairs", True

    def __init__(
        self,
        xi: float = 0.2,
        target: float = 0.8,
        passes: int = 5,
        pool: int = 256,
        surrogates: int = 0,
        references: int = 0,
        views: int = 16,
    ):
        self.xi, self.target, self.passes, self.pool = xi, target, passes, pool
        self.surrogates, self.references, self.views = surrogates, references, views

    def check_budget(self, budget: int) -> None:
        if budget < 2 or budget % 2:
            raise ConfigError(f"UAP queries come in (x, x + v) pairs: the budget must be even, got {budget}")

    def sample(self, ctx: Context) -> Queries:
        from sklearn.cluster import KMeans

        module = ctx.owner_module(self).eval()
        pool = ctx.x[ctx.pick(min(len(ctx.x), self.pool))]
        v, _ = universal_perturbation(
            module, pool, self.xi * ctx.span, self.target, self.passes, ctx.low, ctx.high, ctx.gen
        )
        n = ctx.budget // 2
        if n > len(ctx.x):
            ctx.pick(n)  # raises the budget error
        flat = ctx.x.flatten(1).double().numpy()
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.gen))
        centres = KMeans(n, n_init=1, random_state=seed).fit(flat).cluster_centers_
        nearest = torch.cdist(torch.from_numpy(centres), torch.from_numpy(flat)).argmin(1)
        seeds = ctx.x[nearest]
        adv = (seeds + v).clamp(ctx.low, ctx.high)
        x = torch.stack([seeds, adv], 1).flatten(0, 1)
        aux = {"uap": v}
        if self.surrogates:
            if self.references < 1:
                raise ConfigError("the UAP encoder needs independent reference models: references >= 1")
            positives = [module] + ctx.models("surrogates", self.surrogates)
            negatives = ctx.models("references", self.references)
            aux |= train_encoder(x, positives, negatives, self.views, ctx.gen, ctx.device)
        return Queries(x, "pairs", 2, aux)


def train_encoder(
    x: torch.Tensor,
    positives: list[nn.Module],
    negatives: list[nn.Module],
    views: int,
    gen: torch.Generator,
    device: str = "cpu",
    width: int = 64,
    steps: int = 300,
    temperature: float = 0.1,
) -> dict[str, torch.Tensor]:
    """A two-layer encoder of fingerprints (every query's probabilities, concatenated) trained with the
    supervised contrastive loss: the positives' fingerprints are one class, each negative's its own. Returns its
    weights under the names the ``encoded`` representation reads."""
    import torch.nn.functional as F

    from ..access import WhiteBox
    from .learned import mlp

    fps = torch.stack([WhiteBox(m, device=device).probs(x).flatten() for m in positives + negatives])
    labels = torch.tensor([0] * len(positives) + list(range(1, len(negatives) + 1)))
    pairs = len(x) // 2
    hide = torch.rand(views, len(fps), pairs, generator=gen) < 0.2  # a view hides a random fifth of the pairs
    keep = (~hide).repeat_interleave(2, dim=2).repeat_interleave(fps.shape[1] // len(x), dim=2).float()
    inputs = (fps[None] * keep).flatten(0, 1)  # (views * models, d)
    y = labels.repeat(views)
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        enc = mlp(fps.shape[1], width, width)
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3)
    same = (y[:, None] == y[None]).float()
    eye = torch.eye(len(y))
    same = same - eye
    for _ in range(steps):
        z = F.normalize(enc(inputs), dim=1)
        sim = (z @ z.T / temperature).masked_fill(eye.bool(), -1e9)
        log_p = sim - sim.logsumexp(1, keepdim=True)
        loss = -((log_p * same).sum(1) / same.sum(1).clamp_min(1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {f"encoder.{k}": v.detach().clone() for k, v in enc.state_dict().items()}
