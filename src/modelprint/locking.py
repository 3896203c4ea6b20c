"""Key-locked models, an active defence (the seed mind map's "model authentication"): a released model that is
useless without its owner's key. AdvParams (Xue et al., "AdvParams: An Active DNN Intellectual Property Protection
Technique via Adversarial Perturbation Based Parameter Encryption", arXiv 2105.13697, 2021): a few weights get
adversarial perturbations that wreck the model's accuracy; their positions and values are the key, and whoever
holds it restores the owner's model exactly.

The search, as in the paper: repeatedly take the gradient of the loss on clean data with respect to the weights,
pick the weight not yet perturbed with the largest gradient, and move it by ``epsilon`` in the gradient's sign
(ascending the loss), until the accuracy on that data falls to ``target`` or ``limit`` weights are perturbed.
Deviations: the candidates are the weights of every linear and convolutional layer (the paper chooses a layer),
ranked by gradient times the layer's largest weight and moved by ``epsilon`` times it, so that layers of
different scales compete fairly. ``epsilon`` is 0.5 so that moved weights stay within about the layer's range:
measured on digits CNN/LeNet/MLP, ``epsilon=5`` locks with 5 weights, but clamping every layer to its 99th
percentile then restores 97-99% accuracy; at 0.5 it takes 45-69 weights and the same clamping restores 21-36%.
The key stores the original values, so unlocking is bit-exact (the paper subtracts the perturbation, which
floating point does not always undo).

What it does not stop: a thief with data. Measured in ``benchmarks/ownership.py``, 5 epochs of fine-tuning a
locked digits CNN/LeNet/MLP on the thief's own split recover 0.80-0.89 test accuracy, more than training from
scratch on that split (0.71-0.86); the paper reports robustness to fine-tuning, which these small models do not
show.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import container
from .errors import ConfigError, FileFormatError

FORMAT, VERSION = "modelprint-lock-key", 1


@dataclass(frozen=True, eq=False)
class LockKey:
    """Which weights were moved (the layer among the model's linear and convolutional layers, the flat index), their
    original values and their locked ones (which tell whether a model is the one this key locked)."""

    layer: torch.Tensor  # int64 (n,)
    index: torch.Tensor  # int64 (n,)
    original: torch.Tensor  # float32 (n,)
    locked: torch.Tensor  # float32 (n,)

    def __len__(self) -> int:
        return len(self.layer)

    def save(self, path: str | Path) -> Path:
        tensors = {"layer": self.layer, "index": self.index, "original": self.original, "locked": self.locked}
        return container.write(path, {"format": FORMAT, "format_version": VERSION, "weights": len(self)}, tensors)

    @classmethod
    def load(cls, path: str | Path) -> LockKey:
        header, tensors = container.peek(path, "lock key")
        fields = {"format": str, "format_version": int, "weights": int}
        h = container.check(path, header, tensors, FORMAT, VERSION, fields, "lock key")
        parts = [tensors.get(k) for k in ("layer", "index", "original", "locked")]
        if any(t is None or t.shape != (h["weights"],) for t in parts):
            raise FileFormatError(f"{path}: a lock key needs layer, index, original and locked of {h['weights']} each")
        return cls(parts[0].long(), parts[1].long(), parts[2].float(), parts[3].float())


def layers(model: nn.Module) -> list[torch.Tensor]:
    from .nets import weight_layers

    found = [m.weight for m in weight_layers(model)]
    if not found:
        raise ConfigError(f"{type(model).__name__} has no linear or convolutional layer to lock")
    return found


def lock(
    model: nn.Module,
    data="digits",
    *,
    target: float | None = None,
    epsilon: float = 0.5,
    limit: int = 200,
    inputs: int = 512,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[nn.Module, LockKey]:
    """A locked copy of ``model`` and its key. ``data``: the owner's (its train split), of which ``inputs``
    examples drawn by ``seed`` guide the search; ``target``: the accuracy to fall to on them (default: twice
    chance)."""
    from .fingerprint.helpers import training_set
    from .nets import clone

    if epsilon <= 0 or limit < 1 or inputs < 1:
        raise ConfigError(f"need epsilon > 0, limit >= 1 and inputs >= 1, got {epsilon}, {limit}, {inputs}")
    x, y, _ = training_set(data)
    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:inputs]
    x, y = x[pick].to(device), y[pick].to(device)
    locked = clone(model).to(device).float().eval()
    weights = layers(locked)
    target = 2 / int(locked(x[:1]).shape[1]) if target is None else target
    scale = [float(w.detach().abs().max()) or 1.0 for w in weights]
    free = [torch.ones_like(w, dtype=torch.bool) for w in weights]
    moved: list[tuple[int, int, float, float]] = []
    while len(moved) < limit:
        out = locked(x)  # one forward: the accuracy to stop at and the loss to ascend
        if float((out.argmax(1) == y).float().mean()) <= target:
            break
        grads = torch.autograd.grad(F.cross_entropy(out, y), weights)
        ranked = [torch.where(f, g.abs() * s, -1.0).flatten() for g, f, s in zip(grads, free, scale, strict=True)]
        best = [int(r.argmax()) for r in ranked]
        layer = max(range(len(weights)), key=lambda i: float(ranked[i][best[i]]))
        index = best[layer]
        flat, step = weights[layer].detach().view(-1), grads[layer].reshape(-1)[index].sign()
        original = float(flat[index])
        with torch.no_grad():
            flat[index] += epsilon * scale[layer] * (step if step != 0 else 1.0)
        free[layer].view(-1)[index] = False
        moved.append((layer, index, original, float(flat[index])))
    if not moved:
        raise ConfigError(f"the model's accuracy on its data is already at most {target:g}: nothing to lock")
    columns = list(zip(*moved, strict=True))
    key = LockKey(torch.tensor(columns[0]), torch.tensor(columns[1]), torch.tensor(columns[2], dtype=torch.float32),
                  torch.tensor(columns[3], dtype=torch.float32))  # fmt: skip
    return locked, key


def unlock(model: nn.Module, key: LockKey, *, strict: bool = True) -> nn.Module:
    """``model`` (a locked one) with ``key``'s weights restored: the owner's model. ``strict`` refuses a key whose
    locked values are not the model's (another model's key, or a model changed since it was locked)."""
    from .nets import clone

    out = clone(model)
    weights = layers(out)
    if int(key.layer.max()) >= len(weights):
        raise ConfigError(f"the key names layer {int(key.layer.max())}; the model has {len(weights)}")
    with torch.no_grad():
        for layer, index, original, locked in zip(key.layer.tolist(), key.index.tolist(), key.original,
                                                  key.locked, strict=True):  # fmt: skip
            flat = weights[layer].view(-1)
            if index >= len(flat):
                raise ConfigError(f"the key names weight {index} of layer {layer}, which has {len(flat)}")
            if strict and float(flat[index]) != float(locked):
                raise ConfigError("this key does not unlock this model: its weights are not the ones it locked")
            flat[index] = original.to(flat.dtype)
    return out
