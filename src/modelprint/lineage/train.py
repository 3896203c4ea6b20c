"""Training loops shared by the lineage operations: supervised, distillation and label extraction,
optionally with adversarial training. Deterministic given the seed."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Targets = Callable[[torch.Tensor], torch.Tensor]
QueryFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]  # a thief's batch -> the inputs it sends
OPTIMIZERS = ("adam", "sgd")


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
    queries: QueryFn | None = None,
    labels: torch.Tensor | None = None,
    temperature: float = 1.0,
    optimizer: str = "adam",
    adv_eps: float = 0.0,
    weight_decay: float = 0.0,
    after_step: Callable[[nn.Module], None] | None = None,
    penalty: Callable[[nn.Module], torch.Tensor] | None = None,
    as_deployed: bool = False,
    device: str = "cpu",
) -> nn.Module:
    """Train ``model`` on inputs ``x`` against fixed labels, or against ``targets(batch)`` (a teacher's
    labels or probabilities; ``queries`` turns each batch into the inputs actually sent to the teacher).
    ``labels``: true labels of ``x`` the trainer also has (their cross-entropy is added). ``temperature``
    softens both sides of a soft-label loss (Hinton et al.). Adam or SGD with momentum, one-cycle schedule;
    ``penalty(model)`` is added to every batch's loss (e.g. a white-box watermark's regulariser);
    ``after_step`` runs after every update (e.g. to keep pruned weights at 0). ``as_deployed``: train the function
    as it answers queries (eval mode: batch norm uses its running statistics and keeps them, no dropout)."""
    gen = torch.Generator().manual_seed(seed)
    model.to(device).train(not as_deployed)
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay
        )
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    # a last batch of one example is dropped: batch norm cannot train on it (BatchNorm1d raises)
    starts = [i for i in range(0, len(x), batch_size) if i == 0 or len(x) - i > 1]
    steps = epochs * len(starts)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.15)
    span = float(x.max() - x.min()) or 1.0  # adversarial radius is relative to the input range
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in starts:
            idx = order[i : i + batch_size]
            xb = own = x[idx].to(device)
            if queries is not None and callable(targets):
                xb = queries(xb, gen)
            yb = targets(xb) if callable(targets) else targets[idx].to(device)
            if adv_eps > 0:
                hard = yb.argmax(1) if soft else yb
                model.eval()  # craft on the current model without touching batch-norm statistics
                x_adv = fgsm_random_start(model, xb, hard, adv_eps * span, gen)
                model.train(not as_deployed)
                xb, yb = torch.cat([xb, x_adv]), torch.cat([yb, yb])
            out = model(xb)
            if soft:
                t = temperature
                teacher = yb if t == 1 else F.softmax(yb.clamp_min(1e-12).log() / t, 1)
                loss = F.kl_div(F.log_softmax(out / t, 1), teacher, reduction="batchmean") * t * t
            else:
                loss = F.cross_entropy(out, yb)
            if labels is not None:
                loss = loss + F.cross_entropy(model(own), labels[idx].to(device))
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
