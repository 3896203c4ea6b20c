"""The null bank: as many independent models as a false-positive rate needs, built cheaply and cached.

A distribution-free p-value that holds for this very null set needs ``decide.needed(alpha)`` null models to
reach ``alpha`` (90 at 5%, 459 at 1%). The bank trains that many on the evidence's own data for each stratum a
verdict may be decided on: the owner's architecture when modelprint can rebuild it (the stratum hardest for a
suspect: same inductive biases, same data) and each other small architecture. Models of one architecture train
together as one vectorised ensemble (``torch.func``): each has its own seed, its own initialisation and data
order, and its own Adam state, exactly as if trained alone, but the small matrix products of many models run as
one batched product, which is what makes a hundred models a matter of minutes on 2 cores.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import data as datasets
from .decide import needed
from .errors import ConfigError
from .lineage.cache import ZooCache, default_cache_dir
from .nets import NETS, learning_rate, make_net

OTHER_ARCHS = ("mlp", "lenet", "cnn")  # cheap, no batch norm (vectorised training needs stateless layers)
BANK_SEED = 70_000  # far from the seeds users, benchmarks and helper models pick
STEPS = DEFAULT_STEPS = 1200  # optimiser steps per model: what lineage's train() gives the bundled datasets


@dataclass
class BankModel:
    name: str  # what the evidence file lists
    arch: str  # its stratum
    module: nn.Module


def plan(
    alpha: float,
    owner_arch: str | None,
    input_shape: tuple[int, ...],
    own_only: bool = False,
    count: int | None = None,
    seed_base: int = BANK_SEED,
) -> list[tuple[str, int]]:
    """(architecture, seed) of every bank model for ``alpha``: ``needed(alpha)`` (or ``count``) models of each
    architecture a verdict may be decided on, so that every stratum reaches ``alpha`` without a parametric tail:
    the owner's when it is one of modelprint's nets, and each other small architecture that takes the input
    (none with ``own_only``: weight comparisons need the owner's architecture)."""
    n = count or needed(alpha)
    own = owner_arch if owner_arch in NETS.names() and _fits(owner_arch, input_shape) else None
    out = [(own, seed_base + i) for i in range(n)] if own else []
    if own_only:
        if not own:
            raise ConfigError(f"the null bank cannot rebuild the owner's architecture ({owner_arch}): pass null_models")
        return out
    usable = [a for a in OTHER_ARCHS if _fits(a, input_shape)]
    others = [a for a in usable if a != own] or usable
    # seeds interleave over the other architectures, so a bank built for a larger alpha is a prefix of this one
    return out + [(a, seed_base + 10_000 + k + len(others) * i) for i in range(n) for k, a in enumerate(others)]


def _fits(arch: str, input_shape: tuple[int, ...]) -> bool:
    try:
        make_net(arch, input_shape, 2)
    except Exception:  # an architecture that cannot take this input (e.g. a 2-D CNN on vectors)
        return False
    return True


def build(
    data,
    alpha: float,
    owner_arch: str | None = None,
    *,
    own_only: bool = False,
    count: int | None = None,
    seed_base: int = BANK_SEED,
    cache_dir: str | Path | None | bool = None,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> list[BankModel]:
    """The bank for ``data`` (a registered dataset name, trained on its train split, or ``(x, y)`` tensors) at
    false-positive rate ``alpha``; cached per dataset, architecture and seed unless ``cache_dir=False``.
    ``count`` and ``seed_base`` make other sets of independent models (e.g. held-out ones for a benchmark)."""
    x, y, name = _training_data(data)
    shape, classes = tuple(x.shape[1:]), int(y.max()) + 1
    cache = None if cache_dir is False else ZooCache(default_cache_dir() if cache_dir is None else cache_dir)
    wanted = plan(alpha, owner_arch, shape, own_only, count, seed_base)
    if not wanted:
        raise ConfigError(f"no architecture of modelprint takes inputs of shape {shape}: pass null_models=[...]")
    out: dict[tuple[str, int], nn.Module] = {}
    missing: dict[str, list[int]] = {}
    for arch, seed in wanted:
        hit = cache.get(_key(name, arch, seed), device) if cache else None
        if hit is not None:
            out[arch, seed] = hit[0]
        else:
            missing.setdefault(arch, []).append(seed)
    for arch, seeds in missing.items():
        t0 = time.perf_counter()
        trained = train_ensemble(arch, x, y, seeds, classes, steps=STEPS, device=device)
        for seed, module in zip(seeds, trained, strict=True):
            out[arch, seed] = module
            if cache:
                cache.put(_key(name, arch, seed), module, {"dataset": name, "expression": _key(name, arch, seed)})
        if progress:
            progress(f"null bank: trained {len(seeds)} {arch} models in {time.perf_counter() - t0:.0f} s")
    return [BankModel(f"bank:{arch}:{seed}", arch, out[arch, seed]) for arch, seed in wanted]


def _key(dataset: str, arch: str, seed: int) -> str:
    steps = "" if STEPS == DEFAULT_STEPS else f",steps={STEPS}"  # another recipe, another cache entry
    return f"nullbank({arch},{dataset},{seed}{steps})"


def _training_data(data) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Training inputs and labels, and the name their bank is cached under (tensors: a digest of their content)."""
    if isinstance(data, str):
        if data.startswith("tensors:"):
            raise ConfigError(
                "the fingerprint was made from tensors: pass data=(x, y) to build its null bank "
                "(the owner's data or data like it)"
            )
        ds = datasets.load(data, "train")
        return ds.x.float(), ds.y.long(), data
    from .fingerprint.helpers import held_out

    return held_out(data)


def train_ensemble(
    arch: str,
    x: torch.Tensor,
    y: torch.Tensor,
    seeds: list[int],
    num_classes: int,
    *,
    lr: float | None = None,
    batch_size: int = 32,
    steps: int | None = None,
    device: str = "cpu",
) -> list[nn.Module]:
    """``len(seeds)`` independent ``arch`` nets trained on (x, y) at once: Adam with a one-cycle schedule, each
    net with its seed's initialisation and batch order (lineage ``train``'s recipe, at the architecture's learning
    rate unless ``lr`` is given)."""
    from torch.func import functional_call, stack_module_state, vmap

    nets = []
    for seed in seeds:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            nets.append(make_net(arch, tuple(x.shape[1:]), num_classes).to(device))
    if any(True for n in nets for _ in n.buffers()):
        raise ConfigError(f"{arch} has buffers (batch norm): the vectorised ensemble trains stateless nets only")
    params, _ = stack_module_state(nets)
    skeleton = copy.deepcopy(nets[0]).to("meta")

    def forward(p, xb):
        return functional_call(skeleton, p, (xb,))

    epochs = max(5, min(40, round((steps or STEPS) * batch_size / max(len(x), 1))))
    total = epochs * math.ceil(len(x) / batch_size)
    lr = lr or learning_rate(arch)
    opt = torch.optim.Adam(params.values(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.15)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    x, y = x.to(device), y.to(device)
    for _ in range(epochs):
        orders = torch.stack([torch.randperm(len(x), generator=g) for g in gens]).to(device)  # (M, N)
        for i in range(0, len(x), batch_size):
            idx = orders[:, i : i + batch_size]
            out = vmap(forward)(params, x[idx])  # (M, B, C)
            # the sum over nets of each net's mean loss: every net's gradient is its own
            loss = F.cross_entropy(out.flatten(0, 1), y[idx].flatten(), reduction="sum") / idx.shape[1]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    for m, net in enumerate(nets):
        net.load_state_dict({k: v[m].detach().clone() for k, v in params.items()})
        net.eval()
    return nets
