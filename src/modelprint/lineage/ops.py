"""The attack zoo: each operation turns a model into another (or, for sources, makes one), deterministically
given its parameters. Operations are small classes registered by name; their ``spec()`` is their expression."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .. import data, symmetry
from ..base import Params, Registry
from ..digest import path_digest
from ..errors import ConfigError
from ..nets import clone, head, learning_rate, make_net, weight_layers
from .train import fit, predict

OPS: Registry[Op] = Registry("lineage operation")


@dataclass
class Node:
    """A model in a lineage and the dataset of the task it now solves."""

    module: nn.Module
    dataset: str


class Op(Params):
    """A step of a lineage. ``source`` operations start a chain; the others transform their parent."""

    source: ClassVar[bool] = False

    def check(self) -> None:
        """Raise ``ConfigError`` on invalid parameters (called when an expression is parsed)."""

    def apply(self, parent: Node | None, device: str = "cpu") -> Node:
        raise NotImplementedError

    def content_key(self) -> str:
        """A digest of the local files this step reads, so that the cache notices when they change."""
        return ""


def _trainable(parent: Node) -> nn.Module:
    """A float32 copy of the parent (a quantised parent is trained further in full precision)."""
    return clone(parent.module).float()


def _input_shape(node: Node) -> tuple[int, ...]:
    return tuple(data.load(node.dataset, "test").input_shape)


def _seeded_net(arch: str, ds: data.LabeledDataset, seed: int, width: int | None = None) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return make_net(arch, ds.input_shape, ds.num_classes, width=width)


def _unscripted(model: nn.Module, what: str) -> nn.Module:
    if isinstance(model, torch.jit.ScriptModule):
        raise ConfigError(
            f"{what}, which a TorchScript module does not allow; load the weights with the network's class "
            "instead (load_model(path, arch='my_pkg.nets:Net'), or --arch on the command line)"
        )
    return model


def _check_fraction(name: str, value: float, low: float = 0.0, high: float = 1.0) -> None:
    if not isinstance(value, int | float) or not low <= value < high:
        raise ConfigError(f"{name} must be a number in [{low}, {high}), got {value!r}")


def _check_arch(arch: str) -> None:
    from ..nets import NETS

    if arch != "same" and arch not in NETS:
        raise ConfigError(f"unknown architecture {arch!r}; known: same, {', '.join(NETS.names())}")


# --- sources -------------------------------------------------------------------------------------------


@OPS.register("train")
class Train(Op):
    """Train ``arch`` from scratch on ``dataset``'s owner split (Adam, one-cycle schedule; ``lr=0``: the
    architecture's own rate, 0.01 for most, 0.003 for transformers)."""

    source = True

    def __init__(
        self,
        arch: str,
        dataset: str,
        seed: int,
        epochs: int = 0,
        lr: float = 0.0,
        width: int = 0,
        batch_size: int = 32,
    ):
        self.arch, self.dataset, self.seed = arch, dataset, seed
        # The architecture's own rate, spelled out or not, is the default: one model, one expression.
        lr = 0.0 if lr == learning_rate(arch) else lr
        self.epochs, self.lr, self.width, self.batch_size = epochs, lr, width, batch_size

    def check(self) -> None:
        _check_arch(self.arch)

    def content_key(self) -> str:
        return data.digest(self.dataset)

    def apply(self, parent: Node | None, device: str = "cpu") -> Node:
        ds = data.load(self.dataset, "train")
        net = _seeded_net(self.arch, ds, self.seed, self.width or None)
        # ~1200 optimiser steps by default: enough for the bundled datasets, bounded for large ones.
        epochs = self.epochs or max(5, min(40, round(1200 * self.batch_size / max(len(ds), 1))))
        lr = self.lr or learning_rate(self.arch)
        fit(net, ds.x, ds.y, epochs=epochs, lr=lr, seed=self.seed, batch_size=self.batch_size, device=device)
        return Node(net, self.dataset)


@OPS.register("load")
class Load(Op):
    """Start from a model file (any format ``load_model`` reads as a torch module) solving ``dataset``."""

    source = True

    def __init__(self, path: str, dataset: str):
        self.path, self.dataset = path, dataset

    def content_key(self) -> str:
        return path_digest(self.path) + data.digest(self.dataset)

    def apply(self, parent: Node | None, device: str = "cpu") -> Node:
        from ..io import load_model

        module = load_model(self.path, device=device)
        if not isinstance(module, nn.Module):
            raise ConfigError(
                f"{self.path}: lineage operations change weights, and {type(module).__name__} only answers queries; "
                "export the model as TorchScript, or as weights loaded with its class (--arch)"
            )
        return Node(module, self.dataset)


# --- copies that keep training -------------------------------------------------------------------------


@OPS.register("finetune")
class Finetune(Op):
    """Fine-tune every layer on the attacker split at a lower learning rate."""

    def __init__(self, seed: int, epochs: int = 10, lr: float = 0.001):
        self.seed, self.epochs, self.lr = seed, epochs, lr

    def apply(self, parent: Node, device: str = "cpu") -> Node:
        ds = data.load(parent.dataset, "attacker")
        model = fit(_trainable(parent), ds.x, ds.y, epochs=self.epochs, lr=self.lr, seed=self.seed, device=device)
        return Node(model, parent.dataset)


@OPS.register("transfer")
class Transfer(Op):
    """Replace the classifier head for ``dataset`` (another label set, or a corrupted copy), then fine-tune
    everything on that dataset's attacker split."""

    def __init__(self, dataset: str, seed: int, epochs: int = 20, lr: float = 0.003):
        self.dataset, self.seed, self.epochs, self.lr = dataset, seed, epochs, lr

    def content_key(self) -> str:
        return data.digest(self.dataset)

    def apply(self, parent: Node, device: str = "cpu") -> Node:
        ds = data.load(self.dataset, "attacker")
        if tuple(ds.input_shape) != _input_shape(parent):
            raise ConfigError(
                f"transfer to {self.dataset}: input shape {ds.input_shape} differs from the "
                f"parent's {_input_shape(parent)}"
            )
        model = _unscripted(_trainable(parent), "transfer replaces the classifier head")
        name, old = head(model)
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            new = nn.Linear(old.in_features, ds.num_classes, bias=old.bias is not None)
        model.set_submodule(name, new)
        if getattr(model, "mp_config", None):
            model.mp_config = {**model.mp_config, "num_classes": ds.num_classes}
        fit(model, ds.x, ds.y, epochs=self.epochs, lr=self.lr, seed=self.seed, device=device)
        return Node(model, self.dataset)


# --- compression ---------------------------------------------------------------------------------------


@OPS.register("prune")
class Prune(Op):
    """Zero the ``amount`` fraction of smallest-magnitude weights: over all layers at once, the classifier
    included (``scope=global``), or of each layer separately (``scope=layer``); with ``structured=true``, the
    lowest-L2 output channels of each hidden layer."""

    def __init__(self, amount: float, structured: bool = False, scope: str = "global"):
        self.amount, self.structured, self.scope = amount, structured, scope

    def check(self) -> None:
        _check_fraction("prune amount", self.amount)
        if self.scope not in ("global", "layer"):
            raise ConfigError(f"prune scope must be global or layer, got {self.scope!r}")

    @torch.no_grad()
    def apply(self, parent: Node, device: str = "cpu") -> Node:
        model = clone(parent.module)
        layers = weight_layers(model)
        if self.structured:
            _, last = head(model)
            for layer in layers:
                if layer is last:
                    continue  # removing classes is not pruning
                norms = layer.weight.flatten(1).norm(dim=1)
                drop = norms.argsort()[: int(round(self.amount * len(norms)))]
                layer.weight[drop] = 0
                if layer.bias is not None:
                    layer.bias[drop] = 0
        else:
            for group in [layers] if self.scope == "global" else [[m] for m in layers]:
                _zero_smallest(group, self.amount)
        return Node(model, parent.dataset)


def _zero_smallest(layers: list[nn.Module], amount: float) -> None:
    """Zero exactly ``amount`` of the weights of ``layers`` with the smallest magnitude (ties by position)."""
    flat = torch.cat([m.weight.abs().flatten().float() for m in layers])
    k = int(round(amount * len(flat)))
    if not k:
        return
    mask = torch.ones_like(flat, dtype=torch.bool)
    mask[flat.argsort()[:k]] = False
    offset = 0
    for m in layers:
        n = m.weight.numel()
        m.weight.mul_(mask[offset : offset + n].view_as(m.weight))
        offset += n


@OPS.register("fineprune")
class Fineprune(Op):
    """Fine-pruning (Liu et al. RAID 2018): prune the ``amount`` fraction of last-hidden-layer units least
    active on clean attacker data, then fine-tune with them kept at zero."""

    def __init__(self, seed: int, amount: float = 0.5, epochs: int = 10, lr: float = 0.001):
        self.seed, self.amount, self.epochs, self.lr = seed, amount, epochs, lr

    def check(self) -> None:
        _check_fraction("fineprune amount", self.amount)

    def apply(self, parent: Node, device: str = "cpu") -> Node:
        ds = data.load(parent.dataset, "attacker")
        model = _unscripted(_trainable(parent), "fineprune hooks the classifier's input").to(device)
        _, last = head(model)
        acts = []
        handle = last.register_forward_pre_hook(lambda _m, inp: acts.append(inp[0].detach().float().cpu()))
        predict(model, ds.x, device=device)
        handle.remove()
        mean_act = torch.cat(acts).mean(0)
        dormant = mean_act.argsort()[: int(round(self.amount * len(mean_act)))]
        mask = torch.ones_like(last.weight)
        mask[:, dormant] = 0

        def keep_pruned(m: nn.Module) -> None:
            with torch.no_grad():
                last.weight.mul_(mask.to(last.weight.device))

        keep_pruned(model)
        fit(model, ds.x, ds.y, epochs=self.epochs, lr=self.lr, seed=self.seed, after_step=keep_pruned, device=device)
        return Node(model, parent.dataset)


@OPS.register("quantize")
class Quantize(Op):
    """``fp16``: half-precision weights and arithmetic. ``int8``: symmetric per-output-channel int8 weights
    (stored dequantised, so the model runs under the same API)."""

    def __init__(self, mode: str):
        self.mode = mode

    def check(self) -> None:
        if self.mode not in ("fp16", "int8"):
            raise ConfigError(f"quantize mode must be fp16 or int8, got {self.mode!r}")

    @torch.no_grad()
    def apply(self, parent: Node, device: str = "cpu") -> Node:
        model = clone(parent.module)
        if self.mode == "fp16":
            return Node(model.half(), parent.dataset)
        for layer in weight_layers(model):
            w = layer.weight
            scale = w.abs().flatten(1).amax(1).clamp_min(1e-12) / 127
            scale = scale.view(-1, *([1] * (w.ndim - 1)))
            w.copy_((w / scale).round().clamp(-127, 127) * scale)
        return Node(model, parent.dataset)


# --- reparametrisations --------------------------------------------------------------------------------


class _Symmetry(Op):
    """A function-preserving reparametrisation drawn at random from ``seed``."""

    transform: ClassVar[Callable[..., nn.Module]]

    def __init__(self, seed: int):
        self.seed = seed

    def apply(self, parent: Node, device: str = "cpu") -> Node:
        model = copy.deepcopy(parent.module).cpu()
        return Node(type(self).transform(model, _input_shape(parent), self.seed), parent.dataset)


def _permute(model: nn.Module, input_shape: tuple[int, ...], seed: int) -> nn.Module:
    from ..transformer import is_transformer, permute

    return permute(model, seed) if is_transformer(model) else symmetry.permute(model, input_shape, seed)


@OPS.register("permute")
class Permute(_Symmetry):
    """Randomly permute the hidden units of every layer (function unchanged); of a transformer, every block's
    heads and MLP units and the residual stream's dimensions."""

    transform = staticmethod(_permute)


@OPS.register("rotate")
class Rotate(_Symmetry):
    """A transformer's heads' query/key and value/output subspaces and its residual stream rotated at random, the
    norms' gains folded into the layers that read them (function unchanged)."""

    transform = staticmethod(lambda model, input_shape, seed: _transformer_op(model, "rotate")(model, seed))


@OPS.register("prune_heads")
class PruneHeads(Op):
    """Zero the ``amount`` fraction of a transformer's attention heads with the least value-output weight."""

    def __init__(self, amount: float):
        self.amount = amount

    def check(self) -> None:
        _check_fraction("prune_heads amount", self.amount)

    def apply(self, parent: Node, device: str = "cpu") -> Node:
        model = clone(parent.module)
        return Node(_transformer_op(model, "prune_heads")(model, self.amount), parent.dataset)


@OPS.register("prune_units")
class PruneUnits(PruneHeads):
    """Zero the ``amount`` fraction of each transformer block's MLP units with the least weight."""

    def apply(self, parent: Node, device: str = "cpu") -> Node:
        model = clone(parent.module)
        return Node(_transformer_op(model, "prune_units")(model, self.amount), parent.dataset)


def _transformer_op(model: nn.Module, name: str):
    from ..transformer import derive, is_transformer
    from ..transformer import symmetry as tsym

    if not is_transformer(model):
        raise ConfigError(f"{name} acts on transformers (vit, seqformer, BERT encoders), "
                          f"not a {type(model).__name__}")  # fmt: skip
    return getattr(tsym, name, None) or getattr(derive, name)


@OPS.register("rescale")
class Rescale(_Symmetry):
    """Rescale every ReLU unit by a random factor in [1/4, 4] and its outgoing weights by the inverse."""

    transform = staticmethod(symmetry.rescale)


@OPS.register("noise")
class Noise(Op):
    """Add Gaussian noise to every weight tensor, ``std`` relative to that tensor's own standard deviation."""

    def __init__(self, std: float, seed: int):
        self.std, self.seed = std, seed

    def check(self) -> None:
        _check_fraction("noise std", self.std, 0.0, float("inf"))

    @torch.no_grad()
    def apply(self, parent: Node, device: str = "cpu") -> Node:
        model = clone(parent.module)
        gen = torch.Generator().manual_seed(self.seed)
        for p in model.parameters():
            if p.ndim >= 1 and p.numel() > 1:
                eps = torch.randn(p.shape, generator=gen).to(p.device, p.dtype)
                p.add_(eps * self.std * p.float().std().to(p.dtype))
        return Node(model, parent.dataset)
