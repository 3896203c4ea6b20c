"""Function-preserving symmetries of a network, derived from its module graph with torch.fx.

Hidden units can be permuted (with the matching rows/columns of adjacent layers, batch-, layer- and group-norm
parameters, per-unit buffers and residual branches), and units followed by a ReLU can be rescaled by a > 0
(incoming weights × a, outgoing × 1/a); a unit that passes a GELU/SiLU-like activation, a layer norm or a shift
can only be permuted. Arithmetic with constants and buffers (an input scaling ``x * 2 - 1``, a learnt scalar) is
followed: a scalar changes no unit, a vector of one value per unit is permuted with the units.
``permutation_groups`` finds which parameter axes share a permutation, the permutation spec of Git Re-Basin
(Ainsworth et al., ICLR 2023); ``permute`` and ``rescale`` apply random symmetries.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from .errors import ConfigError

PRODUCERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# Normalisations over all of a value's units: permuting the units permutes their gain and bias, nothing more.
UNIT_NORMS = (nn.LayerNorm, nn.GroupNorm)
ARITHMETIC = {operator.mul: "mul", torch.mul: "mul", operator.truediv: "div", torch.div: "div",
              operator.sub: "sub", torch.sub: "sub", "mul": "mul", "div": "div", "sub": "sub"}  # fmt: skip
# Per-channel ops that commute with a positive rescaling of their input (f(a·x) = a·f(x)).
HOMOGENEOUS = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
# Per-channel ops that commute with permutations only.
ELEMENTWISE = (nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.Softplus, nn.ReLU6, nn.Hardswish, nn.Mish)
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU)
HOMOGENEOUS_FUNCS = {
    F.relu,
    torch.relu,
    F.leaky_relu,
    F.max_pool1d,
    F.max_pool2d,
    F.avg_pool1d,
    F.avg_pool2d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
    F.dropout,
}
ELEMENTWISE_FUNCS = {F.gelu, F.silu, torch.tanh, torch.sigmoid, F.elu, torch.nn.functional.relu6}
ADD = {operator.add, torch.add, operator.iadd}


@dataclass
class Group:
    """Parameter axes that must be permuted together: one hidden-unit permutation of ``size`` units."""

    size: int
    producers: list[tuple[str, int]] = field(default_factory=list)  # (param, axis 0) of layers creating units
    norms: list[str] = field(default_factory=list)  # per-unit params/buffers (batch norm)
    consumers: list[tuple[str, int]] = field(default_factory=list)  # (param, block) on input axis 1
    scale_targets: list[str] = field(default_factory=list)  # last affine params before the ReLU
    fixed: bool = False  # touches the network's input or output
    rescalable: bool = True

    @property
    def permutable(self) -> bool:
        return not self.fixed and self.size > 1


@dataclass
class _Slot:
    """The channel axis of one traced value: its union-find group, flatten block, and ReLU stage."""

    group: int
    block: int = 1
    after_relu: bool = False


class _Groups:
    def __init__(self) -> None:
        self.parent: list[int] = []
        self.groups: list[Group] = []

    def new(self, size: int, fixed: bool = False) -> int:
        self.parent.append(len(self.parent))
        self.groups.append(Group(size, fixed=fixed))
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        ga, gb = self.groups[ra], self.groups[rb]
        if ga.size != gb.size:
            raise ConfigError(f"residual add joins {ga.size} and {gb.size} channels")
        self.parent[rb] = ra
        ga.producers += gb.producers
        ga.norms += gb.norms
        ga.consumers += gb.consumers
        ga.fixed |= gb.fixed
        ga.rescalable = False  # a residual sum: one unit has several producers
        return ra


def _model_label(model: nn.Module) -> str:
    cfg = getattr(model, "mp_config", None)
    return cfg["arch"] if cfg else type(model).__name__


def permutation_groups(model: nn.Module, input_shape: tuple[int, ...]) -> list[Group]:
    """The hidden-unit permutation groups of ``model`` (all groups, fixed ones included)."""
    label = _model_label(model)
    try:
        gm = fx.symbolic_trace(model)
    except Exception as e:
        raise ConfigError(f"cannot trace {label} with torch.fx to find its symmetries: {e}") from None
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    was_training = model.training
    model.eval()
    ShapeProp(gm).propagate(torch.zeros(2, *input_shape, dtype=dtype))
    model.train(was_training)
    modules = dict(gm.named_modules())
    uf = _Groups()
    slots: dict[fx.Node, _Slot] = {}

    def shape(node: fx.Node) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()

    def fix(node: fx.Node) -> None:
        if node in slots:
            uf.groups[uf.find(slots[node].group)].fixed = True

    def unsupported(node: fx.Node, what: str) -> ConfigError:
        return ConfigError(
            f"cannot derive the permutation symmetry of {label}: layer {node.target!s} ({what}) is not supported; "
            "supported: Linear, Conv1d/2d/3d, BatchNorm, LayerNorm/GroupNorm over units, ReLU/GELU-like "
            "activations, pooling, flatten, dropout, residual add, arithmetic with constants and buffers"
        )

    for node in gm.graph.nodes:
        args = [a for a in node.args if isinstance(a, fx.Node)]
        src = slots.get(args[0]) if args else None
        if node.op == "placeholder":
            slots[node] = _Slot(uf.new(shape(node)[1] if len(shape(node)) > 1 else 1, fixed=True))
        elif node.op == "output":
            for a in args:
                fix(a)
        elif node.op == "get_attr":
            continue  # a buffer or parameter read directly: handled where arithmetic uses it
        elif node.op == "call_module":
            mod = modules[node.target]
            if isinstance(mod, PRODUCERS):
                if getattr(mod, "groups", 1) != 1:
                    raise unsupported(node, f"{type(mod).__name__} with groups={mod.groups}")
                if src is not None:
                    g = uf.groups[uf.find(src.group)]
                    g.consumers.append((f"{node.target}.weight", src.block))
                    if not src.after_relu:
                        g.rescalable = False
                out = uf.new(mod.weight.shape[0])
                g = uf.groups[out]
                g.producers.append((f"{node.target}.weight", 0))
                g.scale_targets.append(f"{node.target}.weight")
                if mod.bias is not None:
                    g.producers.append((f"{node.target}.bias", 0))
                    g.scale_targets.append(f"{node.target}.bias")
                slots[node] = _Slot(out)
            elif isinstance(mod, NORMS):
                g = uf.groups[uf.find(src.group)]
                g.norms += [
                    f"{node.target}.{n}"
                    for n in ("weight", "bias", "running_mean", "running_var")
                    if getattr(mod, n, None) is not None
                ]
                if src.after_relu:
                    g.rescalable = False
                elif mod.affine:  # the norm's gain and bias become what a rescaling multiplies
                    g.scale_targets = [f"{node.target}.weight", f"{node.target}.bias"]
                else:
                    g.rescalable = False
                slots[node] = _Slot(src.group, src.block, src.after_relu)
            elif isinstance(mod, UNIT_NORMS):
                if not _normalises_units(mod, shape(args[0])):
                    raise unsupported(node, f"{type(mod).__name__} over other axes than the units")
                g = uf.groups[uf.find(src.group)]
                g.norms += [f"{node.target}.{n}" for n in ("weight", "bias") if getattr(mod, n, None) is not None]
                g.rescalable = False
                slots[node] = _Slot(src.group, src.block)
            elif isinstance(mod, HOMOGENEOUS + ELEMENTWISE):
                if isinstance(mod, ELEMENTWISE):
                    uf.groups[uf.find(src.group)].rescalable = False
                slots[node] = _Slot(src.group, src.block, src.after_relu or isinstance(mod, ACTIVATIONS))
            elif isinstance(mod, nn.Flatten):
                slots[node] = _flatten(node, src, mod.start_dim, shape, uf)
            elif isinstance(mod, nn.Unflatten):
                fix(args[0])
                slots[node] = _Slot(uf.new(shape(node)[1], fixed=True))
            elif isinstance(mod, nn.Sequential | nn.ModuleList):
                raise unsupported(node, type(mod).__name__)
            else:
                raise unsupported(node, type(mod).__name__)
        elif node.op in ("call_function", "call_method"):
            fn = node.target
            tensors = [a for a in args if a in slots]
            if (fn in ADD or fn in ("add", "add_") or fn in ARITHMETIC) and len(tensors) == 1:
                slots[node] = _with_constant(node, slots[tensors[0]], gm, shape, uf, unsupported)
            elif fn in ADD or fn in ("add", "add_"):
                root = tensors[0]
                g = slots[root].group
                for other in tensors[1:]:
                    g = uf.union(g, slots[other].group)
                slots[node] = _Slot(g, slots[root].block, all(slots[t].after_relu for t in tensors))
            elif fn in HOMOGENEOUS_FUNCS or fn in ("relu", "relu_"):
                slots[node] = _Slot(src.group, src.block, src.after_relu or fn in (F.relu, torch.relu, "relu", "relu_"))
            elif fn in ELEMENTWISE_FUNCS or fn in ("sigmoid", "tanh"):
                uf.groups[uf.find(src.group)].rescalable = False
                slots[node] = _Slot(src.group, src.block, src.after_relu)
            elif fn in (torch.flatten, "flatten"):
                start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
                slots[node] = _flatten(node, src, start, shape, uf)
            elif (
                fn in ("view", "reshape", torch.reshape)
                and src is not None
                and len(shape(node)) == 2
                and shape(node)[0] == shape(args[0])[0]
            ):
                slots[node] = _flatten(node, src, 1, shape, uf)
            elif fn in ("size", "dim", getattr) or src is None:
                continue  # shape queries carry no channels
            elif fn in ("mean", "amax", torch.mean) and 1 not in _dims(node):
                slots[node] = _Slot(src.group, src.block, src.after_relu)
            else:
                raise unsupported(node, getattr(fn, "__name__", str(fn)))
    roots = sorted({uf.find(i) for i in range(len(uf.parent))})
    return [uf.groups[r] for r in roots]


def _normalises_units(mod: nn.Module, in_shape: tuple[int, ...]) -> bool:
    """Whether a layer or group norm normalises over all units of a (N, C) value (or each unit on its own)."""
    if isinstance(mod, nn.LayerNorm):
        return len(in_shape) == 2 and tuple(mod.normalized_shape) == in_shape[1:]
    return mod.num_groups in (1, mod.num_channels)


def _with_constant(node: fx.Node, src: _Slot, gm: fx.GraphModule, shape, uf: _Groups, unsupported) -> _Slot:
    """``value (op) constant``, the constant a number or a tensor read from the module (a buffer, a parameter)."""
    g = uf.groups[uf.find(src.group)]
    op = ARITHMETIC.get(node.target, "add")
    if op in ("add", "sub"):
        g.rescalable = False  # a shift does not commute with a rescaling before a ReLU
    tensors = dict(gm.named_parameters()) | dict(gm.named_buffers())
    for a in node.args:
        if isinstance(a, fx.Node) and a.op == "get_attr":
            t = tensors[a.target]
            if t.numel() == 1:
                continue
            if t.ndim == 1 and len(shape(node)) == 2 and t.numel() == shape(node)[1]:
                if not g.fixed:
                    g.norms.append(a.target)  # one value per unit: permuted with the units
                g.rescalable = False
                continue
            raise unsupported(node, f"{op} with a tensor of shape {tuple(t.shape)}")
    return _Slot(src.group, src.block, src.after_relu and op in ("mul", "div"))


def _dims(node: fx.Node) -> tuple[int, ...]:
    d = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", ())
    return tuple(d) if isinstance(d, list | tuple) else (d,)


def _flatten(node: fx.Node, src: _Slot, start_dim: int, shape, uf: _Groups) -> _Slot:
    """Flattening (N, C, *S) from axis 1 turns each channel into a block of prod(S) features."""
    in_shape = shape(node.args[0])
    if start_dim in (1, -len(in_shape) + 1):
        return _Slot(src.group, src.block * math.prod(in_shape[2:]), src.after_relu)
    if start_dim >= 2:
        return _Slot(src.group, src.block, src.after_relu)
    uf.groups[uf.find(src.group)].fixed = True  # flattening the batch axis: give up on this group
    return _Slot(uf.new(1, fixed=True))


def _expand(perm: torch.Tensor, block: int) -> torch.Tensor:
    return (perm[:, None] * block + torch.arange(block)[None, :]).reshape(-1)


@torch.no_grad()
def apply_permutation(model: nn.Module, group: Group, perm: torch.Tensor) -> None:
    """Reorder the units of ``group`` by ``perm`` in place (the function is unchanged)."""
    state = dict(model.named_parameters()) | dict(model.named_buffers())
    for name, _ in group.producers:
        state[name].copy_(state[name].index_select(0, perm))
    for name in group.norms:
        state[name].copy_(state[name].index_select(0, perm))
    for name, block in group.consumers:
        state[name].copy_(state[name].index_select(1, _expand(perm, block)))


@torch.no_grad()
def apply_scaling(model: nn.Module, group: Group, scale: torch.Tensor) -> None:
    """Multiply the units of ``group`` by ``scale`` > 0 before their ReLU and divide after it."""
    state = dict(model.named_parameters())
    for name in group.scale_targets:
        w = state[name]
        w.mul_(scale.to(w.dtype).view(-1, *([1] * (w.ndim - 1))))
    for name, block in group.consumers:
        w = state[name]
        inv = (1.0 / scale).repeat_interleave(block).to(w.dtype)
        w.mul_(inv.view(1, -1, *([1] * (w.ndim - 2))))


def permute(model: nn.Module, input_shape: tuple[int, ...], seed: int) -> nn.Module:
    """Randomly permute every hidden-unit group of ``model`` in place."""
    gen = torch.Generator().manual_seed(seed)
    for group in permutation_groups(model, input_shape):
        if group.permutable:
            apply_permutation(model, group, torch.randperm(group.size, generator=gen))
    return model


def rescale(model: nn.Module, input_shape: tuple[int, ...], seed: int, low: float = 0.25, high: float = 4.0):
    """Rescale every ReLU unit that allows it by a log-uniform factor in [low, high], in place."""
    gen = torch.Generator().manual_seed(seed)
    groups = [g for g in permutation_groups(model, input_shape) if g.permutable and g.rescalable and g.consumers]
    if not groups:
        raise ConfigError(f"{_model_label(model)} has no ReLU units that can be rescaled")
    for group in groups:
        u = torch.rand(group.size, generator=gen, dtype=torch.float64)
        apply_scaling(model, group, torch.exp(math.log(low) + u * (math.log(high) - math.log(low))))
    return model
