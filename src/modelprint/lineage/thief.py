"""Extraction: a new model trained only on the parent's answers, as a family of thieves' recipes.

A recipe is the parameters of one operation: which inputs the thief sends (``queries``, from ``lineage.queries``),
how it trains (optimiser, epochs, temperature), the student's architecture, and whether it also has true labels
for its own split. Data-free extraction (DFME) and Jacobian-based augmentation (Papernot et al.) build their
queries with the student in the loop, so they are operations of their own. Every thief sees the victim through its
answers only (hard labels, or probabilities for the soft recipes), never its weights or gradients.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .. import data
from ..access import WhiteBox, hard_labels
from ..errors import ConfigError
from ..nets import LEARNING_RATES
from .ops import OPS, Node, Op, _check_arch, _seeded_net, _trainable
from .queries import QUERIES
from .train import OPTIMIZERS, fit


def _student(arch: str, parent: Node, ds: data.LabeledDataset, seed: int) -> nn.Module:
    """The thief's fresh network: ``arch``, or the parent's own architecture for ``same``."""
    return _seeded_net(parent.module.mp_config["arch"] if arch == "same" else arch, ds, seed)


class _Extract(Op):
    """Train a student on the parent's answers to the thief's queries."""

    soft: ClassVar[bool] = False
    adv_eps: float = 0.0
    temperature: float = 1.0
    true_labels: bool = False

    def check(self) -> None:
        _check_arch(self.arch)
        QUERIES.make(self.queries)
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")

    def apply(self, parent: Node, device: str = "cpu") -> Node:
        split = data.load(parent.dataset, "attacker")
        x = split.x  # the thief's inputs; their true labels only with ``true_labels``
        teacher = WhiteBox(parent.module, device=device, input_shape=tuple(x.shape[1:]))
        targets = teacher.probs if self.soft else hard_labels(teacher).labels
        queries = QUERIES.make(self.queries).bind(x)
        student = _student(self.arch, parent, split, self.seed)
        student = fit(
            student,
            x,
            lambda xb: targets(xb).to(xb.device),
            epochs=self.epochs,
            lr=_rate(self.lr, student.mp_config["arch"]),
            seed=self.seed,
            soft=self.soft,
            queries=None if self.queries == "own" else queries,
            labels=split.y if self.true_labels else None,
            temperature=self.temperature,
            optimizer=self.optimizer,
            adv_eps=self.adv_eps,
            device=device,
        )
        return Node(student, parent.dataset)


@OPS.register("distill")
class Distill(_Extract):
    """Probability extraction: train ``arch`` (or ``same``) on the parent's probabilities over the thief's
    queries, both softened by ``temperature``."""

    soft = True

    def __init__(
        self,
        arch: str,
        seed: int,
        epochs: int = 40,
        lr: float = 0.01,
        queries: str = "mixup",
        optimizer: str = "adam",
        temperature: float = 1.0,
    ):
        self.arch, self.seed, self.epochs, self.lr = arch, seed, epochs, lr
        self.queries, self.optimizer, self.temperature = queries, optimizer, temperature


@OPS.register("label_extract")
class LabelExtract(_Extract):
    """Label extraction: train ``arch`` on the parent's hard labels over the thief's queries (``queries``: own,
    mixup, augment, noise, natural); ``true_labels`` adds the thief's own labelled split."""

    def __init__(
        self,
        arch: str,
        seed: int,
        epochs: int = 40,
        lr: float = 0.01,
        queries: str = "mixup",
        optimizer: str = "adam",
        true_labels: bool = False,
    ):
        self.arch, self.seed, self.epochs, self.lr = arch, seed, epochs, lr
        self.queries, self.optimizer, self.true_labels = queries, optimizer, true_labels


@OPS.register("adv_label_extract")
class AdvLabelExtract(_Extract):
    """Label extraction with adversarial training: FGSM examples within ``eps`` × input range, labelled with
    the parent's label of the clean input."""

    def __init__(
        self, arch: str, seed: int, eps: float = 0.05, epochs: int = 40, lr: float = 0.01, queries: str = "mixup"
    ):
        self.arch, self.seed, self.eps, self.epochs, self.lr, self.queries = arch, seed, eps, epochs, lr, queries
        self.optimizer = "adam"

    @property
    def adv_eps(self) -> float:  # type: ignore[override]
        return self.eps


@OPS.register("jacobian_extract")
class JacobianExtract(Op):
    """Jacobian-based dataset augmentation (Papernot et al. AsiaCCS 2017): from ``seeds`` of the thief's inputs,
    ``rounds`` times train the student on the parent's labels of the set, then add
    ``x + lam * range * sign(grad_x student_label(x)(x))`` for every x in it (the set doubles each round)."""

    def __init__(
        self, arch: str, seed: int, seeds: int = 150, rounds: int = 4, lam: float = 0.1, epochs: int = 10, lr=0.01
    ):
        self.arch, self.seed, self.seeds, self.rounds, self.lam = arch, seed, seeds, rounds, lam
        self.epochs, self.lr = epochs, lr

    def check(self) -> None:
        _check_arch(self.arch)
        if self.seeds < 1 or self.rounds < 0:
            raise ConfigError("jacobian_extract needs at least one seed input and rounds >= 0")

    def apply(self, parent: Node, device: str = "cpu") -> Node:
        split = data.load(parent.dataset, "attacker")
        teacher = hard_labels(WhiteBox(parent.module, device=device, input_shape=split.input_shape))
        gen = torch.Generator().manual_seed(self.seed)
        x = split.x[torch.randperm(len(split.x), generator=gen)[: self.seeds]]
        low, high = float(split.x.min()), float(split.x.max())
        student = _student(self.arch, parent, split, self.seed)
        for r in range(self.rounds + 1):
            y = teacher.labels(x)
            fit(student, x, y, epochs=self.epochs, lr=self.lr, seed=self.seed + r, device=device)
            if r == self.rounds:
                break
            xr = x.detach().to(device).requires_grad_(True)
            out = student(xr).gather(1, y.to(device)[:, None]).sum()
            (g,) = torch.autograd.grad(out, xr)
            x = torch.cat([x, (x + self.lam * (high - low) * g.sign().cpu()).clamp(low, high)])
        return Node(student.eval(), parent.dataset)


class _Generator(nn.Module):
    def __init__(self, z: int, shape: tuple[int, ...], low: float, high: float, width: int = 256):
        super().__init__()
        self.shape, self.low, self.high = shape, low, high
        self.net = nn.Sequential(
            nn.Linear(z, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, math.prod(shape))
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        u = torch.tanh(self.net(z)).view(len(z), *self.shape)
        return self.low + (u + 1) / 2 * (self.high - self.low)


@OPS.register("dfme")
class DFME(Op):
    """Data-free model extraction (Truong et al. CVPR 2021): a generator searches the input range for inputs where
    student and victim disagree most (L1 between logits, the victim's logits recovered from its probabilities as
    mean-centred log-probabilities), the student learns the victim there. The victim is a black box: the
    generator's gradient through it is a forward-difference estimate along ``directions`` random directions.
    Deviation: the thief knows the input range (the paper's normalised image domain); no real input is used."""

    def __init__(
        self,
        arch: str,
        seed: int,
        iterations: int = 600,
        batch: int = 128,
        student_steps: int = 5,
        directions: int = 1,
        lr: float = 0.05,
        lr_gen: float = 1e-3,
    ):
        self.arch, self.seed, self.iterations, self.batch = arch, seed, iterations, batch
        self.student_steps, self.directions, self.lr, self.lr_gen = student_steps, directions, lr, lr_gen

    def check(self) -> None:
        _check_arch(self.arch)

    def apply(self, parent: Node, device: str = "cpu") -> Node:
        split = data.load(parent.dataset, "attacker")
        low, high = float(split.x.min()), float(split.x.max())  # the input domain, not the data
        victim = WhiteBox(parent.module, device=device, input_shape=split.input_shape)

        def victim_logits(x: torch.Tensor) -> torch.Tensor:
            lp = victim.probs(x).to(device).clamp_min(1e-8).log()
            return lp - lp.mean(1, keepdim=True)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            student = _student(self.arch, parent, split, self.seed).to(device)
            gen_net = _Generator(64, split.input_shape, low, high).to(device)
            opt_s = torch.optim.SGD(student.parameters(), lr=self.lr, momentum=0.9, weight_decay=5e-4)
            opt_g = torch.optim.Adam(gen_net.parameters(), lr=self.lr_gen)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt_s, self.iterations)
            for _ in range(self.iterations):
                self._generator_step(gen_net, student, victim_logits, opt_g, low, high, device)
                for _ in range(self.student_steps):
                    with torch.no_grad():
                        x = gen_net(torch.randn(self.batch, 64, device=device))
                        t = victim_logits(x)
                    loss = (student(x) - t).abs().mean()
                    opt_s.zero_grad(set_to_none=True)
                    loss.backward()
                    opt_s.step()
                sched.step()
        return Node(student.eval(), parent.dataset)

    def _generator_step(self, gen_net, student, victim_logits, opt, low, high, device) -> None:
        """Ascend the student-victim disagreement; its gradient in input space is estimated by forward
        differences of the black-box victim (the student's part is exact but folded into the same estimate, as
        in the paper)."""
        student.eval()
        x = gen_net(torch.randn(self.batch, 64, device=device))
        xd = x.detach()
        eps = 1e-3 * (high - low)

        def disagreement(inputs: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return (student(inputs) - victim_logits(inputs)).abs().mean(1)

        base = disagreement(xd)
        grad = torch.zeros_like(xd)
        for _ in range(self.directions):
            u = torch.randn_like(xd)
            u = u / u.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (u.ndim - 1)))
            diff = disagreement(xd + eps * u) - base
            grad += (diff / eps).view(-1, *([1] * (u.ndim - 1))) * u * xd[0].numel()
        grad /= self.directions
        opt.zero_grad(set_to_none=True)
        x.backward(-grad / len(x))  # ascend
        opt.step()
        student.train()


@OPS.register("randomize_boundary")
class RandomizeBoundary(Op):
    """Classification-boundary randomisation: fine-tune the stolen model on its own labels of the attacker split
    while teaching it random labels at points off the data (blends of two inputs with weight in [0.3, 0.7], and
    inputs moved by ``eps`` of the range in a random sign direction), so that it keeps its accuracy but answers
    differently wherever boundary and adversarial-example fingerprints probe."""

    def __init__(self, seed: int, eps: float = 0.15, epochs: int = 10, lr: float = 0.001, weight: float = 1.0):
        self.seed, self.eps, self.epochs, self.lr, self.weight = seed, eps, epochs, lr, weight

    def apply(self, parent: Node, device: str = "cpu") -> Node:
        split = data.load(parent.dataset, "attacker")
        model = _trainable(parent).to(device)
        labels = WhiteBox(model, device=device, input_shape=split.input_shape).labels(split.x)
        span = float(split.x.max() - split.x.min()) or 1.0
        c = model.mp_config["num_classes"] if getattr(model, "mp_config", None) else int(labels.max()) + 1
        gen = torch.Generator().manual_seed(self.seed)
        n = 2 * len(split.x)  # a fixed set of off-data points, each with its own random label
        a, b = (split.x[torch.randint(0, len(split.x), (n,), generator=gen)] for _ in range(2))
        lam = (torch.rand(n, generator=gen) * 0.4 + 0.3).view(-1, *([1] * (a.ndim - 1)))
        moved = a + self.eps * span * torch.randn(a.shape, generator=gen).sign()
        points = torch.cat([(1 - lam) * a + lam * b, moved])
        targets = torch.randint(0, c, (len(points),), generator=gen)

        def off_data(module: nn.Module) -> torch.Tensor:
            i = torch.randint(0, len(points), (64,), generator=gen)
            return self.weight * F.cross_entropy(module(points[i].to(device)), targets[i].to(device))

        fit(model, split.x, labels, epochs=self.epochs, lr=self.lr, seed=self.seed, penalty=off_data, device=device)
        return Node(model, parent.dataset)


def _rate(lr: float, arch: str) -> float:
    # An architecture with a rate of its own (a transformer: 0.003) trains no faster than that rate.
    return min(lr, LEARNING_RATES[arch]) if arch in LEARNING_RATES else lr
