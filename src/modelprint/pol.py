"""Proof of learning (Jia et al., "Proof-of-Learning: Definitions and Practice", IEEE S&P 2021): while training,
record what it took (the weights every ``k`` steps, which examples each step used, the hyperparameters); a
verifier re-executes the segments where the weights moved most and checks that each lands where the trace says.
Whoever holds a valid trace did the training, or spent as much as it took.

Verification, as in the paper: the trace's last weights must be the model's; its first must look like a fresh
initialisation (per layer, a two-sample Kolmogorov-Smirnov test against a fresh initialisation of the same
architecture); and in every epoch, the ``top`` segments with the largest weight updates are re-executed from
their first checkpoint with the recorded batches, and the reproduced weights must lie within ``tolerance`` of the
recorded ones, relative to the segment's own update (the paper's distance, normalised so that one threshold serves
every model). On the same machine re-execution is exact; another BLAS or a GPU moves it slightly, which the
relative tolerance absorbs (1% of an update).

Deviations: plain SGD (no momentum: the optimiser's state would have to be recorded too); every forward pass is
seeded from the trace's seed and the step, so that dropout reproduces; batch norm's statistics are part of the
checkpoints. A spoof that the paper's own analysis names, a trace made up after the fact for a stolen model
(checkpoints interpolated from a fresh initialisation to the stolen weights, batches drawn at random), fails the
segment check: the reproduced steps go where SGD goes, not where the interpolation does. Adversarial spoofs that
optimise the data of each step so that it lands on the next checkpoint (Zhang et al., S&P 2022) are not tested.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import container
from .errors import ConfigError, FileFormatError
from .verdict import Verdict

FORMAT, VERSION = "modelprint-pol-trace", 1


@dataclass(frozen=True, eq=False)
class Trace:
    """A training trace: the architecture, the data, the hyperparameters, the batches of every step and the
    checkpoints (state dicts) every ``k`` steps, the first being the initialisation and the last the result."""

    config: dict[str, Any]  # the network's mp_config
    dataset: str
    lr: float
    batch: int
    k: int
    seed: int
    steps_per_epoch: int
    batches: torch.Tensor  # int64 (steps, batch): example indices of every step
    checkpoints: list[dict[str, torch.Tensor]]

    def save(self, path: str | Path) -> Path:
        header = {"format": FORMAT, "format_version": VERSION, "config": self.config, "dataset": self.dataset,
                  "lr": self.lr, "batch": self.batch, "k": self.k, "seed": self.seed,
                  "steps_per_epoch": self.steps_per_epoch, "checkpoints": len(self.checkpoints)}  # fmt: skip
        tensors = {"batches": self.batches}
        tensors |= {f"ckpt.{i}.{name}": t for i, c in enumerate(self.checkpoints) for name, t in c.items()}
        return container.write(path, header, tensors)

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        header, tensors = container.peek(path, "proof-of-learning trace")
        fields = {"format": str, "format_version": int, "config": dict, "dataset": str, "lr": float, "batch": int,
                  "k": int, "seed": int, "steps_per_epoch": int, "checkpoints": int}  # fmt: skip
        h = container.check(path, header, tensors, FORMAT, VERSION, fields, "proof-of-learning trace")
        checkpoints: list[dict[str, torch.Tensor]] = [{} for _ in range(h["checkpoints"])]
        for name, t in tensors.items():
            if name.startswith("ckpt."):
                index, _, key = name[5:].partition(".")
                if not index.isdigit() or int(index) >= len(checkpoints):
                    raise FileFormatError(f"{path}: tensor {name!r} names no checkpoint of the trace")
                checkpoints[int(index)][key] = t
        batches = tensors.get("batches")
        steps = (len(checkpoints) - 1) * h["k"]
        if batches is None or batches.ndim != 2 or len(batches) != steps or h["k"] < 1:
            raise FileFormatError(f"{path}: the batches do not match {len(checkpoints)} checkpoints every {h['k']}")
        return cls(h["config"], h["dataset"], h["lr"], h["batch"], h["k"], h["seed"], h["steps_per_epoch"],
                   batches.long(), checkpoints)  # fmt: skip


def _split(dataset: str):
    from . import data

    return data.load(dataset, "train")


def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float, seed: int) -> None:
    """One plain SGD step, its randomness (dropout) fixed by ``seed``."""
    torch.manual_seed(seed)
    model.train()
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= lr * p.grad


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def record(
    arch: str, dataset: str = "digits", *, epochs: int = 20, lr: float = 0.1, batch: int = 32, k: int = 10,
    seed: int = 0,
) -> tuple[nn.Module, Trace]:  # fmt: skip
    """Train ``arch`` on ``dataset``'s train split with plain SGD, recording the trace; the model and its trace."""
    from .lineage.ops import _seeded_net

    if min(epochs, batch, k) < 1 or lr <= 0:
        raise ConfigError(f"need epochs, batch and k >= 1 and lr > 0, got {epochs}, {batch}, {k}, {lr}")
    split = _split(dataset)
    model = _seeded_net(arch, split, seed)
    per_epoch = len(split.x) // batch
    gen = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(len(split.x), generator=gen)[: per_epoch * batch].view(per_epoch, batch)
              for _ in range(epochs)]  # fmt: skip
    batches = torch.cat(orders)[: (len(orders) * per_epoch // k) * k]  # whole segments only
    checkpoints = [_state(model)]
    for step, rows in enumerate(batches):
        _step(model, split.x[rows], split.y[rows], lr, seed * 1_000_003 + step)
        if (step + 1) % k == 0:
            checkpoints.append(_state(model))
    trace = Trace(model.mp_config, dataset, lr, batch, k, seed, per_epoch, batches, checkpoints)
    return model.eval(), trace


def _flat(state: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([state[n].double().flatten() for n in names])


def _fresh_init_p(trace: Trace) -> float:
    """The smallest Bonferroni-corrected p-value, over weight layers, of a KS test of the first checkpoint's
    weights against a fresh initialisation of the architecture."""
    from scipy import stats

    from .nets import rebuild

    with torch.random.fork_rng():  # one fixed comparison initialisation per trace: the check is reproducible
        torch.manual_seed(trace.seed + 1)
        fresh = rebuild(trace.config).state_dict()
    first = trace.checkpoints[0]
    names = [n for n, t in fresh.items() if n.endswith("weight") and t.ndim >= 2]
    if any(n not in first or first[n].shape != fresh[n].shape for n in names):
        return 0.0
    ps = [stats.ks_2samp(first[n].flatten().numpy(), fresh[n].flatten().numpy()).pvalue for n in names]
    return float(min(1.0, min(ps) * len(ps)))


def verify(trace: Trace, model: nn.Module, *, top: int = 1, tolerance: float = 0.01, alpha: float = 0.01) -> Verdict:
    """Is ``trace`` a proof that ``model`` was trained as it says? "valid" or "invalid", with every check in the
    evidence. ``top``: segments re-executed per epoch (those with the largest updates)."""
    from .nets import rebuild

    t0 = time.perf_counter()
    try:
        worker = rebuild(trace.config)
    except (ConfigError, KeyError, TypeError) as e:
        raise ConfigError(f"the trace's architecture cannot be built ({e})") from None
    shapes = {n: t.shape for n, t in worker.state_dict().items()}
    for i, c in enumerate(trace.checkpoints):  # a stranger's trace: every checkpoint must fit the network
        if {n: t.shape for n, t in c.items()} != shapes:
            raise ConfigError(f"checkpoint {i} of the trace does not fit its own architecture")
    state = model.state_dict()
    names = [n for n, _ in worker.named_parameters()]
    last = trace.checkpoints[-1]
    problems = []
    if set(state) != set(last) or any(state[n].shape != last[n].shape for n in last):
        problems.append("the trace's last checkpoint is not of this model's architecture")
    elif not all(torch.equal(state[n].to(last[n].dtype), last[n]) for n in last):
        problems.append("the trace's last checkpoint is not this model's weights")
    init_p = _fresh_init_p(trace)
    if init_p < alpha:
        problems.append(f"its first checkpoint does not look like a fresh initialisation (KS p = {init_p:.2g})")
    split = _split(trace.dataset)
    per_epoch_segments = max(1, trace.steps_per_epoch // trace.k)
    flat = [_flat(c, names) for c in trace.checkpoints]
    updates = [float((b - a).norm()) for a, b in zip(flat, flat[1:], strict=False)]
    chosen = []
    for start in range(0, len(updates), per_epoch_segments):
        epoch = list(range(start, min(start + per_epoch_segments, len(updates))))
        chosen += sorted(epoch, key=lambda s: -updates[s])[:top]
    distances = {}
    for s in chosen:
        worker.load_state_dict(trace.checkpoints[s])
        for step in range(s * trace.k, (s + 1) * trace.k):
            rows = trace.batches[step]
            if int(rows.max()) >= len(split.x) or int(rows.min()) < 0:
                problems.append(f"step {step} uses examples the data does not have")
                break
            _step(worker, split.x[rows], split.y[rows], trace.lr, trace.seed * 1_000_003 + step)
        gap = float((_flat(_state(worker), names) - _flat(trace.checkpoints[s + 1], names)).norm())
        distances[s] = gap / max(updates[s], 1e-12)
    failed = [s for s, d in distances.items() if not d <= tolerance]
    if failed:
        problems.append(f"{len(failed)} of {len(distances)} re-executed segments land elsewhere than recorded "
                        f"(relative distance up to {max(distances[s] for s in failed):.3g})")  # fmt: skip
    worst = max(distances.values(), default=math.inf)
    return Verdict(
        score=1 - min(worst, 1.0), threshold=1 - tolerance, p_value=float("nan"), related=not problems,
        queries=0, alpha=0.0, scheme="proof-of-learning", outcome="valid" if not problems else "invalid",
        method=f"re-execution of the {top} largest segment(s) per epoch (Jia et al. 2021), relative tolerance "
               f"{tolerance:g}",
        warnings=tuple(problems),
        evidence={"segments": len(updates), "re_executed": len(distances), "worst_distance": worst,
                  "init_ks_p": init_p, "seconds": round(time.perf_counter() - t0, 3)},
    )  # fmt: skip


def spoof(model: nn.Module, dataset: str = "digits", *, checkpoints: int = 20, k: int = 10, lr: float = 0.1,
          batch: int = 32, seed: int = 1) -> Trace:  # fmt: skip
    """A trace made up after the fact for a stolen ``model``: checkpoints interpolated from a fresh
    initialisation to its weights, batches drawn at random (what a thief without the training can forge cheaply)."""
    from .lineage.ops import _seeded_net

    split = _split(dataset)
    start, end = _state(_seeded_net(model.mp_config["arch"], split, seed)), _state(model)
    path = [{n: torch.lerp(start[n], end[n], i / checkpoints) if end[n].is_floating_point() else end[n]
             for n in end} for i in range(checkpoints)] + [end]  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    batches = torch.randint(len(split.x), (checkpoints * k, batch), generator=gen)
    per_epoch = len(split.x) // batch
    return Trace(dict(model.mp_config), dataset, lr, batch, k, seed, per_epoch, batches, path)
