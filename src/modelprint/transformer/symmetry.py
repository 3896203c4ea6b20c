"""Function-preserving reparametrisations of a transformer, the ones a thief uses to hide a copy from naive weight
comparisons:

- ``permute``: the attention heads and the MLP units of every block, and the dimensions of the residual stream;
- ``rotate``: each head's query/key and value/output subspaces by random orthogonal maps, and the residual stream
  by a random rotation, after folding the LayerNorm gains into the layers that read the stream (pre-LN; the norms
  are left as plain normalisations) or, post-LN (BERT), turning each LayerNorm into normalisation followed by a
  full affine map (``FoldedNorm``: a diagonal gain conjugated by a rotation is not diagonal).

A LayerNorm centres its input, so a stream rotation must keep the all-ones direction (``stream_rotation``) for
``N(Qx) = Q N(x)``: any rotation of the other ``width - 1`` dimensions is allowed. All act in place on a module
read through ``view``; outputs stay the same to float precision (tested).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError
from .text import FoldedNorm
from .view import View, view


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_rotation(n: int, gen: torch.Generator) -> torch.Tensor:
    """A Haar-random orthogonal n x n matrix (QR of a Gaussian matrix, signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def stream_rotation(n: int, gen: torch.Generator) -> torch.Tensor:
    """A random rotation of R^n that maps the all-ones direction to itself."""
    ones = torch.full((n, 1), 1 / math.sqrt(n), dtype=torch.float64)
    basis, _ = torch.linalg.qr(torch.cat([ones, torch.randn(n, n - 1, generator=gen, dtype=torch.float64)], 1))
    basis[:, 0] = ones[:, 0]  # QR may flip the first column's sign
    inner = torch.eye(n, dtype=torch.float64)
    inner[1:, 1:] = random_rotation(n - 1, gen)
    return basis @ inner @ basis.T


@torch.no_grad()
def _rows(linear: nn.Linear, m: torch.Tensor, sl: slice | None = None) -> None:
    """Output rows ``sl`` of ``linear`` (weight and bias) mapped by ``m``."""
    sl = sl or slice(None)
    w = linear.weight.data
    w[sl] = (m @ w[sl].double()).to(w.dtype)
    if linear.bias is not None:
        linear.bias.data[sl] = (m @ linear.bias.data[sl].double()).to(w.dtype)


@torch.no_grad()
def _cols(linear: nn.Linear, m: torch.Tensor, sl: slice | None = None) -> None:
    """Input columns ``sl`` of ``linear`` mapped by ``m`` (the layer then reads ``m``-transformed inputs)."""
    sl = sl or slice(None)
    w = linear.weight.data
    w[:, sl] = (w[:, sl].double() @ m.T).to(w.dtype)


@torch.no_grad()
def fold_norms(v: View) -> View:
    """Pre-LN: move every LayerNorm's gain and bias into the layers that read it (the norms become plain
    normalisations). Post-LN BERT norms feed the residual sum too, so nothing can be folded: a no-op."""
    if v.post_ln:
        return v
    pairs = [(layer.attn_norm, (layer.query, layer.key, layer.value)) for layer in v.layers]
    pairs += [(layer.mlp_norm, (layer.up,)) for layer in v.layers]
    pairs += [(v.final_norm, tuple(r for r in v.stream_readers if r is v.module.head))]
    for norm, readers in pairs:
        for r in readers:
            r.bias.data += r.weight.data @ norm.bias.data
            r.weight.data *= norm.weight.data[None, :]
        norm.weight.data.fill_(1.0)
        norm.bias.data.zero_()
    return v


@torch.no_grad()
def transform_stream(v: View, q: torch.Tensor) -> None:
    """Map the residual stream by the orthogonal ``q`` (which keeps the all-ones direction): writers' outputs by
    ``q``, readers' inputs by ``q``'s inverse. Pre-LN norms must be folded first; post-LN norms become
    ``FoldedNorm`` (or, for a permutation, keep their class with permuted gains)."""
    is_perm = bool(((q == 0) | (q == 1)).all())
    if not v.post_ln and not is_perm:
        for norm in v.norms():
            if not (bool((norm.weight == 1).all()) and bool((norm.bias == 0).all())):
                raise ConfigError("rotating a pre-LN stream needs its norms folded first (fold_norms)")
    for w in v.stream_writers:
        if isinstance(w, nn.Embedding):
            w.weight.data = (w.weight.data.double() @ q.T).to(w.weight.dtype)
        else:
            _rows(w, q)
    for r in v.stream_readers:
        _cols(r, q)
    if not v.post_ln:
        v.module.pos.data = (v.module.pos.data.double() @ q.T).to(v.module.pos.dtype)
    for norm in v.norms():
        gain = norm.weight.data.double()
        if is_perm and not isinstance(norm, FoldedNorm):  # a permuted diagonal gain is still diagonal
            norm.weight.data = (q @ gain).to(norm.weight.dtype)
            norm.bias.data = (q @ norm.bias.data.double()).to(norm.bias.dtype)
            continue
        if not v.post_ln:
            continue  # folded: nothing left in the norm to rotate
        matrix = gain if isinstance(norm, FoldedNorm) else torch.diag(gain)
        folded = FoldedNorm(len(gain), norm.eps).to(norm.weight.device)
        folded.weight.data = (q @ matrix @ q.T).to(norm.weight.dtype)
        folded.bias.data = (q @ norm.bias.data.double()).to(norm.bias.dtype)
        _replace(v.module, norm, folded)
    if v.post_ln and not is_perm:
        refreshed = view(v.module)  # the view's norms now point at the new modules
        v.layers, v.first = refreshed.layers, refreshed.first


def _replace(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for name, m in root.named_modules():
        if m is old:
            root.set_submodule(name, new)
            return


@torch.no_grad()
def _permute_layer(layer, gen: torch.Generator) -> None:
    d = layer.query.out_features // layer.heads
    order = torch.randperm(layer.heads, generator=gen)
    idx = (order[:, None] * d + torch.arange(d)[None, :]).reshape(-1)
    for lin in (layer.query, layer.key, layer.value):
        lin.weight.data = lin.weight.data[idx]
        lin.bias.data = lin.bias.data[idx]
    layer.output.weight.data = layer.output.weight.data[:, idx]
    units = torch.randperm(layer.up.out_features, generator=gen)
    layer.up.weight.data, layer.up.bias.data = layer.up.weight.data[units], layer.up.bias.data[units]
    layer.down.weight.data = layer.down.weight.data[:, units]


def permute(module: nn.Module, seed: int) -> nn.Module:
    """Permute every block's heads and MLP units and the residual stream's dimensions, at random, in place."""
    gen, v = _generator(seed), view(module)
    for layer in v.layers:
        _permute_layer(layer, gen)
    order = torch.randperm(v.width, generator=gen)
    transform_stream(v, torch.eye(v.width, dtype=torch.float64)[order])
    return module


def rotate(module: nn.Module, seed: int) -> nn.Module:
    """Rotate every head's query/key and value/output subspaces and the residual stream (norms folded), at random,
    in place."""
    gen, v = _generator(seed), view(module)
    for layer in v.layers:
        d = layer.query.out_features // layer.heads
        for h in range(layer.heads):
            sl = slice(h * d, (h + 1) * d)
            qk, vo = random_rotation(d, gen), random_rotation(d, gen)
            _rows(layer.query, qk, sl)
            _rows(layer.key, qk, sl)
            _rows(layer.value, vo, sl)
            _cols(layer.output, vo, sl)
    fold_norms(v)
    transform_stream(v, stream_rotation(v.width, gen))
    return module
