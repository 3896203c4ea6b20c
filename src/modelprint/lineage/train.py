"""Training loops shared by the lineage operations: supervised, distillation and label extraction,
optionally with adversarial training. Deterministic given the seed."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Targets = Callable[[torch.Tensor], torch.Tensor]


def mixup_queries(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The batch plus blends of random pairs of it (weight of the second input in [0, 0.5]): extra queries a
    thief makes from its own data to see more of the teacher's decision boundary."""
    lam = (torch.rand(len(x), generator=gen) * 0.5).to(x.device).view(-1, *([1] * (x.ndim - 1)))
    perm = torch.randperm(len(x), generator=gen).to(x.device)
    return torch.cat([x, (1 - lam) * x + lam * x[perm]])


def fgsm_random_start(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, gen: torch.Generator):
    """One-step adversarial examples from a random start (Wong et al. 2020, "fast is better than free")."""
    delta = (torch.rand(x.shape, generator=gen, device="cpu").to(x.device) * 2 - 1) * eps
    delta.requires_grad_(True)
    loss = F.cross_entropy(model(x + delta), y)
    (grad,) = torch.autograd.grad(loss, delta)
    delta = (delta + 1.25 * eps * grad.sign()).clamp(-eps, eps)
    return (x + delta).detach()


def fit(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor | Targets,
    *,
    epochs: int,
    lr: float,
    seed: int,
    batch_size: int = 32,
    soft: bool = False,
    mix: bool = False,
    adv_eps: float = 0.0,
    weight_decay: float = 0.0,
    after_step: Callable[[nn.Module], None] | None = None,
    penalty: Callable[[nn.Module], torch.Tensor] | None = None,
    device: str = "cpu",
) -> nn.Module:
    """Train ``model`` on inputs ``x`` against fixed labels, or against ``targets(batch)`` (a teacher's
    labels or probabilities; with ``mix`` the batch is extended by ``mixup_queries`` before asking).
    Adam with a one-cycle schedule; ``penalty(model)`` is added to every batch's loss (e.g. a white-box
    watermark's regulariser); ``after_step`` runs after every update (e.g. to keep pruned weights at 0)."""
    gen = torch.Generator().manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.15)
    span = float(x.max() - x.min()) or 1.0  # adversarial radius is relative to the input range
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            xb = x[idx].to(device)
            if mix and callable(targets):
                xb = mixup_queries(xb, gen)
            yb = targets(xb) if callable(targets) else targets[idx].to(device)
            if adv_eps > 0:
                hard = yb.argmax(1) if soft else yb
                model.eval()  # craft on the current model without touching batch-norm statistics
                x_adv = fgsm_random_start(model, xb, hard, adv_eps * span, gen)
                model.train()
                xb, yb = torch.cat([xb, x_adv]), torch.cat([yb, yb])
            out = model(xb)
            loss = F.kl_div(F.log_softmax(out, 1), yb, reduction="batchmean") if soft else F.cross_entropy(out, yb)
            if penalty is not None:
                loss = loss + penalty(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if after_step is not None:
                after_step(model)
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024, device: str = "cpu") -> torch.Tensor:
    """Logits of ``model`` on ``x`` in float32, evaluated in batches in eval mode."""
    model.eval()
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    outs = [
        model(x[i : i + batch_size].to(device=device, dtype=dtype)).float().cpu() for i in range(0, len(x), batch_size)
    ]
    return torch.cat(outs) if outs else torch.empty(0)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str = "cpu") -> float:
    return float((predict(model, x, device=device).argmax(1) == y).float().mean())
