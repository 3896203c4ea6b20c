"""A small real diffusion model for the AIAO experiments: a ``diffusers.UNet2DModel`` built from a config (no
download), trained with DDPM noise prediction on digits upsampled to 16x16, sampled with DDIM. Checkpoints are
diffusers folders (``save_pretrained``: a JSON config and safetensors weights)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from . import data
from .errors import ConfigError, ModelFileError

SIZE = 16
TIMESTEPS = 1000


def images(split: str = "train", classes: Sequence[int] | None = None) -> torch.Tensor:
    """Digits as 1x16x16 images in [-1, 1] (bilinear upsampling of the 8x8 originals); ``classes`` keeps only
    those digits (a shifted distribution for fine-tuning attacks)."""
    ds = data.load("digits", split)
    x, y = ds.x.float(), ds.y
    if classes is not None:
        keep = torch.isin(y, torch.as_tensor(list(classes)))
        if not keep.any():
            raise ConfigError(f"no digits of classes {list(classes)} in the {split} split")
        x = x[keep]
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-8) * 2 - 1


def make_unet(channels: Sequence[int] = (32, 64, 64), layers_per_block: int = 1, seed: int = 0):
    """A UNet2DModel for 1x16x16 images, initialised from ``seed``."""
    from diffusers import UNet2DModel

    if len(channels) < 2 or any(c % 8 for c in channels):
        raise ConfigError(f"channels must be 2 or more multiples of 8 (group norm), got {list(channels)}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return UNet2DModel(
            sample_size=SIZE,
            in_channels=1,
            out_channels=1,
            block_out_channels=tuple(channels),
            layers_per_block=layers_per_block,
            down_block_types=("DownBlock2D",) * len(channels),
            up_block_types=("UpBlock2D",) * len(channels),
            norm_num_groups=8,
        )


def denoising_loss(unet, x: torch.Tensor, gen: torch.Generator, scheduler=None) -> torch.Tensor:
    """DDPM's objective: the MSE between the noise added at a random timestep and the UNet's prediction."""
    from diffusers import DDPMScheduler

    scheduler = scheduler or DDPMScheduler(num_train_timesteps=TIMESTEPS)
    noise = torch.randn(x.shape, generator=gen).to(x.device)
    t = torch.randint(0, TIMESTEPS, (len(x),), generator=gen).to(x.device)
    return F.mse_loss(unet(scheduler.add_noise(x, noise, t), t).sample, noise)


def train(
    unet,
    x: torch.Tensor,
    steps: int,
    *,
    lr: float = 2e-3,
    batch_size: int = 64,
    seed: int = 0,
    device: str = "cpu",
    progress: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train (or fine-tune) ``unet`` in place for ``steps`` Adam steps; returns the loss of every step."""
    from diffusers import DDPMScheduler

    if steps < 1:
        raise ConfigError(f"steps must be positive, got {steps}")
    gen = torch.Generator().manual_seed(seed)
    scheduler = DDPMScheduler(num_train_timesteps=TIMESTEPS)
    unet.to(device).train()
    opt = torch.optim.AdamW(unet.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    losses = []
    for step in range(steps):
        idx = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=gen)
        loss = denoising_loss(unet, x[idx].to(device), gen, scheduler)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss))
        if progress:
            progress(step + 1, losses[-1])
    unet.eval()
    return losses


@torch.no_grad()
def sample(unet, n: int, *, steps: int = 50, seed: int = 0, device: str = "cpu") -> torch.Tensor:
    """``n`` images from pure noise with deterministic DDIM (eta 0), in [-1, 1]."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=TIMESTEPS)
    scheduler.set_timesteps(steps)
    x = torch.randn((n, 1, SIZE, SIZE), generator=torch.Generator().manual_seed(seed)).to(device)
    unet.to(device).eval()
    for t in scheduler.timesteps:
        x = scheduler.step(unet(x, t).sample, t, x).prev_sample
    return x.clamp(-1, 1).cpu()


def save(unet, path: str | Path) -> Path:
    """A diffusers folder (config.json + diffusion_pytorch_model.safetensors)."""
    unet.save_pretrained(str(path), safe_serialization=True)
    return Path(path)


def load(path: str | Path, device: str = "cpu"):
    """A UNet from a local diffusers folder: safetensors weights only, never a pickle, never a download."""
    from diffusers import UNet2DModel

    path = Path(path)
    if not (path / "config.json").is_file() or not (path / "diffusion_pytorch_model.safetensors").is_file():
        raise ModelFileError(f"{path}: not a diffusers folder with config.json and safetensors weights")
    try:
        unet = UNet2DModel.from_pretrained(
            str(path), use_safetensors=True, local_files_only=True, low_cpu_mem_usage=False
        )
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"{path}: cannot load the UNet ({e})") from None
    return unet.to(device).eval()
