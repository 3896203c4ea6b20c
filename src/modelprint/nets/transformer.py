"""Small transformer classifiers: ``vit`` (an image cut into patches, Dosovitskiy et al. 2021) and ``seqformer``
(a signal read one step per token). Both are one pre-LayerNorm encoder (``Transformer``) with explicit query,
key, value and output projections, so that the symmetries of ``modelprint.transformer`` (heads, MLP units, the
residual stream) can act on named weights, and with no buffers, so that the null bank trains them as an ensemble.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from . import LEARNING_RATES, NETS


class Attention(nn.Module):
    """Multi-head self-attention with separate ``query``/``key``/``value``/``output`` projections."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ConfigError(f"transformer width {width} is not a multiple of its {heads} heads")
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))
        self.output = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.view(n, t, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)
        return self.output((scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    """Pre-LN block: ``x + attn(ln1(x))``, then ``x + down(gelu(up(ln2(x))))``."""

    def __init__(self, width: int, heads: int, hidden: int):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(width), Attention(width, heads)
        self.ln2, self.up, self.down = nn.LayerNorm(width), nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class Tokens(nn.Module):
    """Cuts a batch into tokens of ``patch`` steps: (C, H, W) images into ``patch`` x ``patch`` patches (or, with
    ``steps``, into pixels row by row, as a signal of C channels), (C, L) signals into runs of steps, (D,) vectors
    into runs of features."""

    def __init__(self, shape: tuple[int, ...], patch: int, steps: bool = False):
        super().__init__()
        if len(shape) > 3:
            raise ConfigError(f"transformers take vectors, signals (C, L) or images (C, H, W); got {shape}")
        self.shape = (shape[0], shape[1] * shape[2]) if steps and len(shape) == 3 else shape
        self.patch = patch
        sides = self.shape[1:] if len(self.shape) > 1 else self.shape
        if any(s % patch for s in sides):
            raise ConfigError(f"patch {patch} does not divide the input's sides {shape}")

    @property
    def count_and_dim(self) -> tuple[int, int]:
        s, p = self.shape, self.patch
        if len(s) == 1:
            return s[0] // p, p
        if len(s) == 2:
            return s[1] // p, s[0] * p
        return (s[1] // p) * (s[2] // p), s[0] * p * p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, p = len(x), self.patch
        if len(self.shape) == 1:
            return x.reshape(n, -1, p)
        if len(self.shape) == 2:  # (N, C, L) -> (N, L/p, C*p)
            x = x.reshape(n, *self.shape)
            return x.unfold(2, p, p).permute(0, 2, 1, 3).reshape(n, self.shape[1] // p, -1)
        c, h, w = self.shape
        x = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(n, (h // p) * (w // p), c * p * p)


class Transformer(nn.Module):
    """Tokens, a linear embedding plus learned positions, ``depth`` pre-LN blocks, a final LayerNorm, the mean
    over tokens and a linear classifier ``head``."""

    def __init__(self, shape, num_classes: int, patch: int, width: int, depth: int, heads: int, mlp: int,
                 steps: bool = False):  # fmt: skip
        super().__init__()
        self.tokens = Tokens(tuple(shape), patch, steps)
        count, dim = self.tokens.count_and_dim
        self.embed = nn.Linear(dim, width)
        self.pos = nn.Parameter(torch.randn(1, count, width) * 0.02)
        self.blocks = nn.ModuleList(Block(width, heads, mlp * width) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(self.tokens(x)) + self.pos
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h).mean(1))


def _patch(sides: tuple[int, ...], wanted: int) -> int:
    """The largest patch up to ``wanted`` that divides every side (1 always does)."""
    return max(p for p in range(1, wanted + 1) if all(s % p == 0 for s in sides))


@NETS.register("vit")
def vit(shape, num_classes: int, width: int = 64, depth: int = 2, heads: int = 4, mlp: int = 2, patch: int = 2):
    """Vision transformer: 2x2 patches of an 8x8 digit are 16 tokens (signals: runs of 2 steps)."""
    shape = tuple(shape)
    return Transformer(shape, num_classes, _patch(shape[1:] or shape, patch), width, depth, heads, mlp)


@NETS.register("seqformer")
def seqformer(shape, num_classes: int, width: int = 64, depth: int = 2, heads: int = 4, mlp: int = 2, patch: int = 4):
    """Sequence transformer: a token per run of 4 steps of a signal (of an image: per pixel, row by row)."""
    shape = tuple(shape)
    sides = (shape[1] * shape[2],) if len(shape) == 3 else shape[1:] or shape
    return Transformer(shape, num_classes, _patch(sides, patch), width, depth, heads, mlp, steps=True)


LEARNING_RATES.update(vit=0.003, seqformer=0.003)  # measured: 92% on digits at 0.01, 95% at 0.003
