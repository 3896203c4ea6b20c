"""The small diffusion model: training lowers the denoising loss, checkpoints round-trip through safetensors
only, sampling is deterministic given a seed, the shifted distribution keeps only its classes."""

from __future__ import annotations

import pytest
import torch

from modelprint import diffusion
from modelprint.errors import ConfigError, ModelFileError


@pytest.fixture(scope="module")
def trained():
    unet = diffusion.make_unet(channels=(8, 16), seed=0)
    losses = diffusion.train(unet, diffusion.images(), 40, batch_size=32)
    return unet, losses


def test_images_are_scaled_and_subsets_keep_their_classes():
    x = diffusion.images()
    assert x.shape[1:] == (1, 16, 16) and x.min() == -1 and x.max() == 1
    few = diffusion.images("train", [0, 1])
    assert 0 < len(few) < len(x) / 4
    with pytest.raises(ConfigError, match="no digits"):
        diffusion.images("train", [42])


def test_training_lowers_the_denoising_loss(trained):
    _, losses = trained
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:5]) / 5


def test_checkpoint_round_trip_and_deterministic_sampling(trained, tmp_path):
    unet, _ = trained
    again = diffusion.load(diffusion.save(unet, tmp_path / "unet"))
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([5, 500, 900])
    with torch.no_grad():
        assert torch.equal(unet(x, t).sample, again(x, t).sample)
    a, b = diffusion.sample(unet, 4, steps=5, seed=1), diffusion.sample(again, 4, steps=5, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, diffusion.sample(unet, 4, steps=5, seed=2))


def test_loading_refuses_anything_but_a_safetensors_folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    torch.save({"w": torch.zeros(1)}, tmp_path / "diffusion_pytorch_model.bin")  # a pickle is never read
    with pytest.raises(ModelFileError, match="not a diffusers folder"):
        diffusion.load(tmp_path)
    (tmp_path / "diffusion_pytorch_model.safetensors").write_bytes(b"junk")
    with pytest.raises(ModelFileError, match="cannot load"):
        diffusion.load(tmp_path)


def test_cli_trains_and_writes_samples(tmp_path):
    from typer.testing import CliRunner

    from modelprint.cli import app

    r = CliRunner().invoke(app, ["diffusion", "train", "-o", str(tmp_path / "u"), "--steps", "3", "--classes", "0,1"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "u" / "samples.png").exists() and diffusion.load(tmp_path / "u") is not None
