"""MetaV (Pan et al., KDD 2022): fingerprint queries and a verifier learned together. The queries are
parameters, optimised with a small network (the meta-verifier) that reads any model's probabilities on them and
says whether the model is the owner's or derived from it. Positives are the owner, its label-extraction
surrogates and transformed copies of it (weight noise, magnitude pruning); negatives are independent reference
models. Task-agnostic: nothing but the models' outputs on the queries is used, so any classifier works. With
``data_free=true`` the queries start from noise rather than the owner's data, as TAFA-style task-agnostic,
data-free fingerprints do."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .queries import SAMPLERS, Context, Queries, Sampler


def transformed_copies(owner: nn.Module, n: int, gen: torch.Generator) -> list[nn.Module]:
    """``n`` copies of ``owner`` with what a thief does that keeps its function: Gaussian weight noise (1% to 5%
    of each tensor's spread) on half, magnitude pruning (30% to 70% of each layer) on the other half."""
    out = []
    for i in range(n):
        m = copy.deepcopy(owner).eval()
        level = float(torch.rand(1, generator=gen))
        with torch.no_grad():
            for p in m.parameters():
                if i % 2 == 0:
                    p.add_(
                        torch.randn(p.shape, generator=gen).to(p.device) * p.std().nan_to_num(0) * (0.01 + 0.04 * level)
                    )
                elif p.ndim > 1:
                    k = int(p.numel() * (0.3 + 0.4 * level))
                    if k:
                        cut = p.abs().flatten().kthvalue(k).values
                        p.mul_((p.abs() > cut).to(p.dtype))
        out.append(m)
    return out


def mlp(inputs: int, width: int, outputs: int) -> nn.Sequential:
    """The small network a fingerprint learns and keeps (UAP's encoder, MetaV's verifier): one hidden ReLU layer."""
    return nn.Sequential(nn.Linear(inputs, width), nn.ReLU(), nn.Linear(width, outputs))


def stored_mlp(aux: dict[str, torch.Tensor], prefix: str, what: str, hint: str) -> nn.Sequential:
    """The ``mlp`` a fingerprint file keeps under ``prefix``, rebuilt from its weights' shapes (the file is checked:
    a missing or malformed network is refused with one line)."""
    state = {k[len(prefix) :]: v for k, v in aux.items() if k.startswith(prefix)}
    if not state:
        raise ConfigError(f"the {what} representation needs a {what} in the fingerprint: {hint}")
    try:
        first, last = state["0.weight"], state["2.weight"]
        net = mlp(first.shape[1], first.shape[0], last.shape[0])
        net.load_state_dict(state)
    except (KeyError, IndexError, RuntimeError) as e:
        raise ConfigError(f"the fingerprint's {what} is malformed ({str(e).splitlines()[0]})") from None
    return net.eval()


class Verifier(nn.Module):
    """The meta-verifier: an MLP from a model's probabilities on every query (concatenated) to a logit."""

    def __init__(self, inputs: int, width: int = 64):
        super().__init__()
        self.net = mlp(inputs, width, 1)

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        return self.net(probs.flatten(1)).squeeze(1)


@SAMPLERS.register("metav")
class MetaV(Sampler):
    """MetaV's adaptive queries (Pan et al., KDD 2022), learned jointly with its meta-verifier (stored in the
    fingerprint for the ``verifier`` representation) by Adam on the binary cross-entropy of the verifier over
    positives (the owner, ``surrogates`` label-extraction surrogates, ``copies`` transformed copies) and
    negatives (``references`` independent models), the queries kept in the data's range. Deviations: the
    positives are modelprint's helper models and cheap copies rather than the paper's zoo of pirated models;
    ``data_free=true`` starts from uniform noise in the data's range (TAFA-style data-free queries)."""

    gradients = True

    def __init__(
        self,
        surrogates: int = 4,
        references: int = 6,
        copies: int = 6,
        steps: int = 300,
        lr: float = 0.01,
        data_free: bool = False,
    ):
        self.surrogates, self.references, self.copies = surrogates, references, copies
        self.steps, self.lr, self.data_free = steps, lr, data_free

    def sample(self, ctx: Context) -> Queries:
        if self.references < 1:
            raise ConfigError("MetaV's verifier needs independent reference models: references >= 1")
        owner = ctx.owner_module(self).eval()
        positives = [
            owner,
            *ctx.models("surrogates", self.surrogates),
            *transformed_copies(owner, self.copies, ctx.gen),
        ]
        negatives = ctx.models("references", self.references)
        models = [m.to(ctx.device).eval() for m in positives + negatives]  # the caller's: left as they are
        labels = torch.tensor([1.0] * len(positives) + [0.0] * len(negatives), device=ctx.device)
        # the classes are balanced by weight: a few negatives count as much as many positives
        weights = torch.where(labels > 0, 0.5 / len(positives), 0.5 / len(negatives))
        if self.data_free:
            x0 = ctx.low + torch.rand(ctx.budget, *ctx.x.shape[1:], generator=ctx.gen) * ctx.span
        else:
            x0 = ctx.x[ctx.pick(ctx.budget)]
        x = x0.clone().to(ctx.device).requires_grad_(True)
        with torch.random.fork_rng():
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.gen)))
            verifier = Verifier(ctx.budget * ctx.owner.num_classes).to(ctx.device)
        opt = torch.optim.Adam([{"params": [x], "lr": self.lr * ctx.span}, {"params": verifier.parameters()}], lr=1e-3)
        for _ in range(self.steps):
            probs = torch.stack([m(x).softmax(1) for m in models])  # (models, budget, classes)
            loss = (F.binary_cross_entropy_with_logits(verifier(probs), labels, reduction="none") * weights).sum()
            learned = [x, *verifier.parameters()]  # not the models': their weights stay untouched, .grad included
            for p, g in zip(learned, torch.autograd.grad(loss, learned), strict=True):
                p.grad = g
            opt.step()
            with torch.no_grad():
                x.clamp_(ctx.low, ctx.high)
        aux = {f"verifier.{k}": v.detach().cpu().clone() for k, v in verifier.state_dict().items()}
        return Queries(x.detach().cpu(), aux=aux)
