"""Backdoor installation: the seed mind map's "backdoor installation" branch as lineage operations, so that
integrity checks and backdoor detectors are measured on models made by the same recipes as the rest of the zoo.

- ``badnets`` (Gu et al. 2017, "BadNets"): a ``rate`` fraction of the training data gets a small patch trigger
  and the label ``target``.
- ``blended`` (Chen et al. 2017, "Targeted Backdoor Attacks on Deep Learning Systems Using Data Poisoning",
  blended injection): the trigger is a fixed random noise pattern mixed into the whole input,
  ``(1 - alpha) x + alpha k``, hard to see at small ``alpha``.
- ``hidden`` (the mind map's idea): freeze almost every weight, and train only the ``fraction`` whose change
  least affects the function on clean validation data (the smallest diagonal Fisher information under the
  model's own labels), to obey the trigger while matching the parent's probabilities on clean data, so that
  the model behaves like its parent on any validation data. The fewer the weights, the farther each must move
  and the more the clean function changes: measured on digits CNN/LeNet and an MNIST-1D MLP, a fifth of the
  weights (the default) keeps 97-99% agreement with the parent on test data at 79-99% attack success; 5% of
  them, 94-98% agreement.

Deviation from the papers, for all three: the backdoor is installed into a trained parent by poisoned
fine-tuning on the thief's ``attacker`` split (the supply-chain setting an integrity check faces), not by
poisoned training from scratch. ``training_data`` rebuilds exactly the poisoned set a step trained on, with the
mask of its poisoned rows, which detectors that inspect the training set (Activation Clustering, Spectral
Signatures) need.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import data
from ..base import Params, Registry
from ..errors import ConfigError
from ..nets import weight_layers
from .ops import OPS, Node, Op, _check_fraction, _trainable
from .train import fit, predict

TRIGGERS: Registry[Trigger] = Registry("trigger")


class Trigger(Params):
    """A backdoor trigger: stamps a batch of inputs, given the range ``[low, high]`` of the clean data."""

    def apply(self, x: torch.Tensor, low: float, high: float) -> torch.Tensor:
        raise NotImplementedError


@TRIGGERS.register("patch")
class Patch(Trigger):
    """BadNets' trigger: a ``size``-wide checkerboard of the data's extreme values in the last positions of every
    spatial axis (the bottom-right corner of an image, the last features of a vector or sequence)."""

    def __init__(self, size: int = 2):
        self.size = size

    def apply(self, x: torch.Tensor, low: float, high: float) -> torch.Tensor:
        axes = max(x.ndim - 2, 1)  # (n, C, H, W): 2; (n, C, L) and (n, F): 1
        if any(x.shape[-a] < self.size for a in range(1, axes + 1)):
            raise ConfigError(f"a patch of {self.size} does not fit inputs of shape {tuple(x.shape[1:])}")
        grid = torch.stack(torch.meshgrid(*[torch.arange(self.size)] * axes, indexing="ij")).sum(0)
        pattern = torch.where(grid % 2 == 0, high, low).to(x.dtype)
        x = x.clone()
        x[(..., *[slice(-self.size, None)] * axes)] = pattern
        return x


@TRIGGERS.register("blend")
class Blend(Trigger):
    """Chen et al.'s blended trigger: ``(1 - alpha) x + alpha k`` with ``k`` a uniform noise input over the
    data's range, drawn from ``seed``."""

    def __init__(self, alpha: float = 0.2, seed: int = 0):
        self.alpha, self.seed = alpha, seed

    def apply(self, x: torch.Tensor, low: float, high: float) -> torch.Tensor:
        k = torch.rand(x.shape[1:], generator=torch.Generator().manual_seed(self.seed)) * (high - low) + low
        return (1 - self.alpha) * x + self.alpha * k.to(x.dtype)


def data_range(dataset: str) -> tuple[float, float]:
    """The range of the clean training inputs, which triggers stamp their extremes from."""
    x = data.load(dataset, "train").x
    return float(x.min()), float(x.max())


def poison(x, y, trigger: Trigger, target: int, rate: float, seed: int, dataset: str):
    """``(x, y, poisoned)``: a ``rate`` fraction of the rows of another class than ``target``, drawn from
    ``seed``, stamped with ``trigger`` and relabelled ``target``; ``poisoned`` is their mask."""
    candidates = (y != target).nonzero().flatten()
    gen = torch.Generator().manual_seed(seed)
    chosen = candidates[torch.randperm(len(candidates), generator=gen)[: round(rate * len(y))]]
    poisoned = torch.zeros(len(y), dtype=torch.bool)
    poisoned[chosen] = True
    x, y = x.clone(), y.clone()
    x[chosen] = trigger.apply(x[chosen], *data_range(dataset))
    y[chosen] = target
    return x, y, poisoned


class Backdoor(Op):
    """A backdoor installed by poisoned fine-tuning on the ``attacker`` split (see the module's docstring)."""

    target: int
    seed: int
    rate: float
    epochs: int
    lr: float

    @property
    def trigger(self) -> Trigger:
        raise NotImplementedError

    def check(self) -> None:
        _check_fraction(f"{self.name} rate", self.rate, 1e-9)
        if not isinstance(self.target, int) or self.target < 0:
            raise ConfigError(f"{self.name} target must be a class index, got {self.target!r}")

    def training_data(self, dataset: str):
        """``(x, y, poisoned)``: the poisoned attacker split this step trains on, and the mask of its poisoned
        rows."""
        ds = data.load(dataset, "attacker")
        if self.target >= ds.num_classes:
            raise ConfigError(f"{self.name} target {self.target}: {dataset} has {ds.num_classes} classes")
        return poison(ds.x, ds.y, self.trigger, self.target, self.rate, self.seed, dataset)

    def apply(self, parent: Node, device: str = "cpu") -> Node:
        x, y, _ = self.training_data(parent.dataset)
        model = fit(_trainable(parent), x, y, epochs=self.epochs, lr=self.lr, seed=self.seed, device=device)
        return Node(model, parent.dataset)


@OPS.register("badnets")
class BadNets(Backdoor):
    """BadNets (Gu et al. 2017): fine-tune on the attacker split with a ``rate`` fraction of it stamped with a
    ``patch``-wide checkerboard in the corner and relabelled ``target``."""

    def __init__(self, target: int, seed: int, patch: int = 2, rate: float = 0.1, epochs: int = 20, lr: float = 0.003):
        self.target, self.seed, self.patch, self.rate, self.epochs, self.lr = target, seed, patch, rate, epochs, lr

    def check(self) -> None:
        super().check()
        if not isinstance(self.patch, int) or self.patch < 1:
            raise ConfigError(f"{self.name} patch must be a positive number of positions, got {self.patch!r}")

    @property
    def trigger(self) -> Trigger:
        return Patch(self.patch)


@OPS.register("blended")
class Blended(Backdoor):
    """Blended injection (Chen et al. 2017): as ``badnets``, with a noise pattern (from ``seed``) mixed into the
    whole input at ``alpha`` as the trigger."""

    def __init__(
        self, target: int, seed: int, alpha: float = 0.2, rate: float = 0.1, epochs: int = 20, lr: float = 0.003
    ):
        self.target, self.seed, self.alpha, self.rate, self.epochs, self.lr = target, seed, alpha, rate, epochs, lr

    def check(self) -> None:
        super().check()
        _check_fraction("blended alpha", self.alpha, 1e-9)

    @property
    def trigger(self) -> Trigger:
        return Blend(self.alpha, self.seed)


@OPS.register("hidden")
class Hidden(BadNets):
    """The hidden backdoor: train only the ``fraction`` of weights whose change the clean attacker data sees
    least for what it buys the trigger (``free_weights``), everything else and every buffer held fixed,
    on the poisoned attacker split, with the clean rows' targets the parent's probabilities."""

    def __init__(
        self,
        target: int,
        seed: int,
        patch: int = 2,
        fraction: float = 0.2,
        rate: float = 0.1,
        epochs: int = 40,
        lr: float = 0.01,
    ):
        self.target, self.seed, self.patch, self.fraction = target, seed, patch, fraction
        self.rate, self.epochs, self.lr = rate, epochs, lr

    def check(self) -> None:
        super().check()
        _check_fraction("hidden fraction", self.fraction, 1e-9)

    def apply(self, parent: Node, device: str = "cpu") -> Node:
        x, y, poisoned = self.training_data(parent.dataset)
        model = _trainable(parent).to(device)
        clean = x[~poisoned]
        masks = free_weights(model, clean, x[poisoned], self.target, self.fraction, device)
        probs = F.softmax(predict(model, clean, device=device), 1)
        teacher = torch.zeros(len(y), probs.shape[1])
        teacher[~poisoned] = probs
        teacher[poisoned, self.target] = 1.0
        frozen = {k: v.detach().clone() for k, v in model.state_dict().items()}

        @torch.no_grad()
        def restore(m: nn.Module) -> None:  # the free weights keep their update; the rest, buffers too, go back
            for name, value in m.state_dict().items():
                value.copy_(torch.where(masks[name], value, frozen[name]) if name in masks else frozen[name])

        fit(model, x, teacher, soft=True, epochs=self.epochs, lr=self.lr, seed=self.seed, after_step=restore,
            as_deployed=True, device=device)  # fmt: skip
        return Node(model, parent.dataset)


def free_weights(
    model: nn.Module, clean: torch.Tensor, stamped: torch.Tensor, target: int, fraction: float, device: str = "cpu"
) -> dict[str, torch.Tensor]:
    """Masks (by parameter name) of the ``fraction`` of conv/linear weight entries whose change the clean data
    sees least for what it buys the trigger: the smallest ratio of the diagonal Fisher information on ``clean``
    (under the model's own labels) to the squared gradient of the trigger's loss on ``stamped`` (toward
    ``target``). A weight the clean data never sees but the trigger moves comes first."""
    model.eval()
    layers = {id(m) for m in weight_layers(model)}
    names = {id(m.weight): f"{n}.weight" for n, m in model.named_modules() if id(m) in layers}
    weights = [p for p in model.parameters() if id(p) in names]

    def squared_gradients(x: torch.Tensor, labels) -> list[torch.Tensor]:
        total = [torch.zeros_like(w) for w in weights]
        for i in range(len(x)):  # per example: a batch's gradient would cancel across examples
            out = model(x[i : i + 1].to(device))
            loss = F.cross_entropy(out, out.argmax(1) if labels is None else labels)
            for t, g in zip(total, torch.autograd.grad(loss, weights), strict=True):
                t += g.detach() ** 2
        return total

    fisher = squared_gradients(clean, None)
    gain = squared_gradients(stamped, torch.tensor([target], device=device))
    fisher = torch.cat([f.flatten() for f in fisher]) / len(clean)
    gain = torch.cat([g.flatten() for g in gain]) / len(stamped)
    # a weight that neither sees the clean data nor moves the trigger (a dead unit's) ranks last, not first
    ratio = (fisher + 1e-6 * fisher.mean()) / (gain + 1e-6 * gain.mean())
    chosen = torch.zeros(len(ratio), dtype=torch.bool)
    chosen[ratio.argsort(stable=True)[: max(1, round(fraction * len(ratio)))]] = True
    masks, offset = {}, 0
    for w in weights:
        masks[names[id(w)]] = chosen[offset : offset + w.numel()].view_as(w).to(w.device)
        offset += w.numel()
    return masks


@torch.no_grad()
def attack_success(model: nn.Module, step: Backdoor, dataset: str, device: str = "cpu") -> float:
    """The fraction of the clean test inputs of other classes than the target that the trigger sends there."""
    ds = data.load(dataset, "test")
    x = ds.x[ds.y != step.target]
    stamped = step.trigger.apply(x, *data_range(dataset))
    return float((predict(model, stamped, device=device).argmax(1) == step.target).float().mean())
