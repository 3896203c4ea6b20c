"""Diffusion models: a small real ``diffusers`` UNet trained on digits (``model``), quality proxies for its samples
(``quality``), where fine-tuning moves it (``blocks``), and the watermarks planted in it: AIAO and the
trigger-noise baseline (``aiao``)."""

from .model import (
    SIZE,
    TIMESTEPS,
    LowRank,
    add_lora,
    denoise,
    denoising_loss,
    images,
    load,
    make_unet,
    merge_lora,
    noisy,
    sample,
    save,
    train,
)  # fmt: skip
from .quality import confidence, frechet

__all__ = [
    "SIZE", "TIMESTEPS", "LowRank", "add_lora", "confidence", "denoise", "denoising_loss", "frechet", "images", "load",
    "make_unet", "merge_lora", "noisy", "sample", "save", "train",
]  # fmt: skip
