"""Small architectures by name: ``make_net("cnn", input_shape=(1, 8, 8), num_classes=10, width=32)``.

Every net works for vectors (D,), signals (C, L) and images (C, H, W), and any number of classes; the
returned module carries ``mp_config`` (architecture name and options) so that it can be saved and rebuilt.
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..base import Registry
from ..errors import ConfigError

NETS: Registry[nn.Module] = Registry("architecture")
# Adam's learning rate for training an architecture from scratch, where 0.01 is too high for it
LEARNING_RATES: dict[str, float] = {}


def learning_rate(arch: str) -> float:
    return LEARNING_RATES.get(arch, 0.01)


def make_net(name: str, input_shape: Sequence[int], num_classes: int, **options: Any) -> nn.Module:
    """Build architecture ``name`` for inputs of ``input_shape`` (without batch axis) and ``num_classes``."""
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s <= 0 for s in shape):
        raise ConfigError(f"input_shape must be non-empty and positive, got {input_shape}")
    if int(num_classes) < 2:
        raise ConfigError(f"num_classes must be at least 2, got {num_classes}")
    options = {k: v for k, v in options.items() if v is not None}
    net = NETS.make(name, shape, int(num_classes), **options)
    net.mp_config = {"arch": name, "input_shape": list(shape), "num_classes": int(num_classes), **options}
    return net


def rebuild(config: dict[str, Any]) -> nn.Module:
    """The (untrained) net described by an ``mp_config`` dict."""
    opts = {k: v for k, v in config.items() if k not in ("arch", "input_shape", "num_classes")}
    return make_net(config["arch"], config["input_shape"], config["num_classes"], **opts)


def clone(module: nn.Module) -> nn.Module:
    """A deep copy. A TorchScript module is copied through its archive: ``deepcopy`` leaves its parameters as
    non-leaf tensors, which no optimiser accepts."""
    if isinstance(module, torch.jit.ScriptModule):
        buffer = io.BytesIO()
        torch.jit.save(module, buffer)
        buffer.seek(0)
        return torch.jit.load(buffer, map_location=next(module.parameters()).device)
    return copy.deepcopy(module)


def layer_kind(m: nn.Module) -> str:
    """The layer's class name; a TorchScript submodule keeps it as ``original_name``."""
    scripted = isinstance(m, torch.jit.ScriptModule)
    return getattr(m, "original_name", type(m).__name__) if scripted else type(m).__name__


def head(module: nn.Module) -> tuple[str, nn.Linear]:
    """The classifier head: the last ``nn.Linear`` in module order."""
    linears = [(n, m) for n, m in module.named_modules() if layer_kind(m) == "Linear"]
    if not linears:
        raise ConfigError(f"{type(module).__name__} has no nn.Linear classifier head")
    return linears[-1]


def weight_layers(module: nn.Module) -> list[nn.Module]:
    """The linear and convolutional layers (of a TorchScript module too), whose weights compression acts on."""
    return [m for m in module.modules() if layer_kind(m) in ("Linear", "Conv1d", "Conv2d", "Conv3d")]


def names(pattern: str = "*") -> list[str]:
    return NETS.names(pattern)


# --- shape helpers -------------------------------------------------------------------------------------


def _as_signal_or_image(shape: tuple[int, ...], arch: str) -> tuple[nn.Module, tuple[int, ...]]:
    """A reshaping front layer and the shape it produces: vectors become 1-channel signals."""
    if len(shape) == 1:
        return nn.Unflatten(1, (1, shape[0])), (1, shape[0])
    if len(shape) in (2, 3):
        return nn.Identity(), shape
    raise ConfigError(f"{arch} takes vectors, signals (C, L) or images (C, H, W); got input shape {shape}")


def _layers(ndim: int) -> tuple[type, type, type, type]:
    """Conv, BatchNorm, MaxPool, AdaptiveAvgPool classes for 1 or 2 spatial dimensions."""
    if ndim == 1:
        return nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d
    return nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d


def _pool_or_keep(size: tuple[int, ...], pool_cls: type, min_out: int = 1) -> tuple[nn.Module, tuple[int, ...]]:
    """Halve the spatial size with max pooling when every side keeps at least ``min_out`` steps."""
    if min(size) >= 2 * min_out:
        return pool_cls(2), tuple(s // 2 for s in size)
    return nn.Identity(), size


# --- architectures -------------------------------------------------------------------------------------


@NETS.register("mlp")
def mlp(shape: tuple[int, ...], num_classes: int, width: int = 128, depth: int = 2) -> nn.Module:
    """Fully connected ReLU network with ``depth`` hidden layers of ``width`` units."""
    dims = [math.prod(shape)] + [width] * depth
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(dims[-1], num_classes))
    return nn.Sequential(*layers)


@NETS.register("cnn")
def cnn(shape: tuple[int, ...], num_classes: int, width: int = 32) -> nn.Module:
    """Three 3-wide convolutions (one max pool), pooled features, two dense layers."""
    front, shape = _as_signal_or_image(shape, "cnn")
    conv, _, maxpool, avgpool = _layers(len(shape) - 1)
    pool, size = _pool_or_keep(shape[1:], maxpool)
    out = tuple(min(s, 2) for s in size)
    return nn.Sequential(
        front,
        conv(shape[0], width, 3, padding=1),
        nn.ReLU(),
        conv(width, width, 3, padding=1),
        nn.ReLU(),
        pool,
        conv(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        avgpool(out),
        nn.Flatten(),
        nn.Linear(2 * width * math.prod(out), 4 * width),
        nn.ReLU(),
        nn.Linear(4 * width, num_classes),
    )


@NETS.register("lenet")
def lenet(shape: tuple[int, ...], num_classes: int, width: int = 12) -> nn.Module:
    """LeNet-5 layout: two 5-wide convolutions with pooling, then 120-84-C dense layers. ``width=6`` gives the
    original 6/16 channels; the default doubles them, which 8x8 digits need to reach 97% reliably."""
    front, shape = _as_signal_or_image(shape, "lenet")
    conv, _, maxpool, avgpool = _layers(len(shape) - 1)
    c1, c2 = width, round(width * 16 / 6)
    pool1, size = _pool_or_keep(shape[1:], maxpool)
    pool2, size = _pool_or_keep(size, maxpool, min_out=4)  # small inputs (8x8) keep a 4x4 map
    out = tuple(min(s, 4) for s in size)
    return nn.Sequential(
        front,
        conv(shape[0], c1, 5, padding=2),
        nn.ReLU(),
        pool1,
        conv(c1, c2, 5, padding=2),
        nn.ReLU(),
        pool2,
        avgpool(out),
        nn.Flatten(),
        nn.Linear(c2 * math.prod(out), 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN plus a (projected when shapes change) skip connection."""

    def __init__(self, conv: type, norm: type, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = conv(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = norm(c_out)
        self.shortcut = (
            nn.Sequential(conv(c_in, c_out, 1, stride=stride, bias=False), norm(c_out))
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ResNetTiny(nn.Module):
    def __init__(self, shape: tuple[int, ...], num_classes: int, width: int = 16, blocks: int = 1):
        super().__init__()
        self.front, shape = _as_signal_or_image(shape, "resnet-tiny")
        conv, norm, _, avgpool = _layers(len(shape) - 1)
        self.stem = nn.Sequential(conv(shape[0], width, 3, padding=1, bias=False), norm(width), nn.ReLU())
        stride2 = 2 if min(shape[1:]) >= 4 else 1
        stage1 = [BasicBlock(conv, norm, width, width, 1) for _ in range(blocks)]
        stage2 = [BasicBlock(conv, norm, width, 2 * width, stride2)]
        stage2 += [BasicBlock(conv, norm, 2 * width, 2 * width, 1) for _ in range(blocks - 1)]
        self.layer1, self.layer2 = nn.Sequential(*stage1), nn.Sequential(*stage2)
        self.pool, self.flatten = avgpool(1), nn.Flatten()
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(self.front(x))))
        return self.fc(self.flatten(self.pool(x)))


@NETS.register("resnet-tiny")
def resnet_tiny(shape: tuple[int, ...], num_classes: int, width: int = 16, blocks: int = 1) -> nn.Module:
    """Two-stage ResNet with batch norm and skip connections (``blocks`` basic blocks per stage)."""
    return ResNetTiny(shape, num_classes, width, blocks)


@NETS.register("cnn1d")
def cnn1d(shape: tuple[int, ...], num_classes: int, width: int = 32) -> nn.Module:
    """1-D convolutions over the flattened spatial axis (signals as they are, images row by row)."""
    if len(shape) == 1:
        front, channels, length = nn.Unflatten(1, (1, shape[0])), 1, shape[0]
    else:
        front, channels, length = nn.Flatten(start_dim=2), shape[0], math.prod(shape[1:])
    pool, (size,) = _pool_or_keep((length,), nn.MaxPool1d)
    out = min(size, 4)
    return nn.Sequential(
        front,
        nn.Conv1d(channels, width, 5, padding=2),
        nn.ReLU(),
        pool,
        nn.Conv1d(width, width, 5, padding=2),
        nn.ReLU(),
        nn.Conv1d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(out),
        nn.Flatten(),
        nn.Linear(2 * width * out, 4 * width),
        nn.ReLU(),
        nn.Linear(4 * width, num_classes),
    )


from . import transformer  # noqa: E402,F401  (registers vit and seqformer)
