"""Where fine-tuning moves a diffusers UNet: its blocks in forward order, a forward pass that adds to or keeps
block outputs, and ``profile``, which fine-tunes a copy and measures each block's change in weights and features
(AIAO's busy and lazy blocks)."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import diffusion
from ..errors import AccessError, ConfigError

# The units of a diffusers UNet between which subpaths run: every resnet, attention and resampler of the down,
# mid and up blocks (the naming UNet2DModel and UNet2DConditionModel share).
BLOCK = re.compile(r"^(?:(?:down|up)_blocks\.\d+|mid_block)\.(?:resnets|attentions|downsamplers|upsamplers)\.\d+$")


def run_blocks(unet, x_t, t, add: dict[str, Callable] | None = None, keep: Sequence[str] = ()):
    """The UNet's noise prediction, with ``add[block](output)`` added to those blocks' outputs and the outputs of
    ``keep`` blocks returned (in execution order)."""
    kept: dict[str, torch.Tensor] = {}

    def hook(name):
        def run(_module, _inputs, out):
            if not isinstance(out, torch.Tensor):
                raise AccessError(f"block {name} returns {type(out).__name__}, not a feature tensor")
            if add and name in add:
                out = out + add[name](out)
            if name in keep:
                kept[name] = out
            return out

        return run

    handles = []
    try:
        for name in {*(add or {}), *keep}:
            try:
                module = unet.get_submodule(name)
            except AttributeError:
                raise AccessError(f"the UNet has no block {name!r} (not the marked architecture?)") from None
            handles.append(module.register_forward_hook(hook(name)))
        return unet(x_t, t).sample, kept
    finally:
        for h in handles:
            h.remove()


def blocks(unet) -> list[str]:
    """The UNet's blocks (see ``BLOCK``) in the order the forward pass runs them."""
    names = [n for n, _ in unet.named_modules() if BLOCK.match(n)]
    if len(names) < 2:
        raise ConfigError(f"{type(unet).__name__} has fewer than 2 diffusers UNet blocks to run subpaths between")
    size = unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else size
    with torch.no_grad():
        device = next(unet.parameters()).device
        x = torch.zeros(1, unet.config.in_channels, height, width, device=device)
        t = torch.ones(1, dtype=torch.long, device=device)
        _, out = run_blocks(unet, x, t, keep=names)
    return list(out)


def _changes(a: nn.Module, b: nn.Module, names: Sequence[str]) -> np.ndarray:
    """Relative weight change ||W' - W|| / ||W|| of each named submodule."""
    ma, mb = dict(a.named_modules()), dict(b.named_modules())
    out = []
    for n in names:
        wa = torch.cat([p.detach().flatten() for p in ma[n].parameters()])
        wb = torch.cat([p.detach().flatten() for p in mb[n].parameters()])
        out.append(float((wb - wa).norm() / wa.norm().clamp_min(1e-12)))
    return np.array(out)


@dataclass(frozen=True)
class Profile:
    """How much fine-tuning moved each block (AIAO's observation): relative weight and feature changes."""

    blocks: tuple[str, ...]  # in execution order
    weight_change: np.ndarray
    feature_change: np.ndarray
    steps: int

    def lazy(self, fraction: float = 0.5) -> tuple[str, ...]:
        """The ``fraction`` of blocks whose weights moved least, in execution order."""
        if not 0 < fraction <= 1:
            raise ConfigError(f"the lazy fraction must be in (0, 1], got {fraction}")
        k = max(2, round(fraction * len(self.blocks)))
        picked = set(np.argsort(self.weight_change, kind="stable")[:k])
        return tuple(b for i, b in enumerate(self.blocks) if i in picked)

    def busy(self, k: int = 3) -> tuple[str, ...]:
        """The ``k`` blocks whose weights moved most, busiest first."""
        return tuple(self.blocks[i] for i in np.argsort(-self.weight_change, kind="stable")[:k])

    def rows(self) -> list[dict]:
        lazy = set(self.lazy())
        return [
            {"block": b, "weight_change": float(w), "feature_change": float(f), "lazy": b in lazy}
            for b, w, f in zip(self.blocks, self.weight_change, self.feature_change, strict=True)
        ]

    def plot(self, path: str | Path) -> Path:
        """A bar chart of both changes per block, lazy blocks marked."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from ..io import save_figure

        lazy = set(self.lazy())
        x = np.arange(len(self.blocks))
        fig, axes = plt.subplots(2, 1, figsize=(max(6, 0.45 * len(x)), 6), sharex=True)
        colours = ["tab:blue" if b in lazy else "tab:red" for b in self.blocks]
        changes = (self.weight_change, self.feature_change)
        for ax, values, label in zip(axes, changes, ("weights", "features"), strict=True):
            ax.bar(x, values, color=colours)
            ax.set_ylabel(f"relative change, {label}")
        axes[0].set_title(f"Fine-tuning for {self.steps} steps: busy (red) and lazy (blue) blocks")
        axes[1].set_xticks(x, [b.replace("_blocks", "").replace("_block", "") for b in self.blocks], rotation=70)
        fig.tight_layout()
        return save_figure(fig, path, dpi=110)


def profile(unet, x: torch.Tensor, *, steps: int = 200, lr: float = 1e-3, seed: int = 0, device: str = "cpu",
            progress: Callable[[int, float], None] | None = None) -> Profile:  # fmt: skip
    """Fine-tune a copy of ``unet`` on ``x`` (the owner's guess at an attacker's data) and measure, per block,
    the relative change of its weights and of its output features on noisy inputs."""
    names = blocks(unet)
    tuned = copy.deepcopy(unet)
    diffusion.train(tuned, x, steps, lr=lr, seed=seed, device=device, progress=progress)
    gen = torch.Generator().manual_seed(seed)
    x_t, _, t = diffusion.noisy(x[torch.randperm(len(x), generator=gen)[:64]].to(device), gen)
    with torch.no_grad():
        _, before = run_blocks(unet.to(device).eval(), x_t, t, keep=names)
        _, after = run_blocks(tuned, x_t, t, keep=names)
    feature = [float((after[n] - before[n]).norm() / before[n].norm().clamp_min(1e-12)) for n in names]
    return Profile(tuple(names), _changes(unet, tuned, names), np.array(feature), steps)
