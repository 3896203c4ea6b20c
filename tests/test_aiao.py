"""Diffusion watermarks: AIAO (reconstruction) and the trigger-noise baseline, on tiny UNets trained for
seconds."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from modelprint import container, diffusion
from modelprint.diffusion import aiao
from modelprint.errors import AccessError, ConfigError, FileFormatError

SPEC = "aiao(blocks=down_blocks.0.resnets.0+down_blocks.1.resnets.0+up_blocks.1.resnets.0+up_blocks.1.resnets.1)"


def tiny(seed: int, steps: int = 40):
    unet = diffusion.make_unet(channels=(16, 16), seed=seed)
    diffusion.train(unet, diffusion.images("train"), steps, batch_size=32, seed=seed)
    return unet


@pytest.fixture(scope="session")
def base():
    return tiny(0)


@pytest.fixture(scope="session")
def clean(base):
    """Clean models: the unmarked UNet, a fine-tune of it, and an independent one; plus a held-out fine-tune."""
    tuned = copy.deepcopy(base)
    diffusion.train(tuned, diffusion.images("train", [5, 6, 7, 8, 9]), 20, lr=5e-4, seed=1)
    held_out = copy.deepcopy(base)
    diffusion.train(held_out, diffusion.images("train", [0, 1, 2, 3, 4]), 20, lr=5e-4, seed=2)
    return [base, tuned, tiny(1)], held_out


@pytest.fixture(scope="session")
def marked(base, clean):
    unet, key = aiao.embed(base, SPEC, diffusion.images("train"), key_seed=5, steps=100, lr=2e-3)
    return unet, aiao.calibrate(key, clean[0], trials=32)


def test_blocks_follow_the_forward_pass(base):
    names = aiao.blocks(base)
    assert names[0].startswith("down_blocks.0.") and names[-1].startswith("up_blocks.")
    assert names.index("mid_block.attentions.0") == names.index("mid_block.resnets.0") + 1


def test_secrets_are_a_function_of_the_key():
    a = aiao._secret(7, "mid_block.resnets.0", "trigger", (16, 4, 4), 0.25)
    assert torch.equal(a, aiao._secret(7, "mid_block.resnets.0", "trigger", (16, 4, 4), 0.25))
    assert not torch.equal(a, aiao._secret(8, "mid_block.resnets.0", "trigger", (16, 4, 4), 0.25))
    assert not torch.equal(a, aiao._secret(7, "mid_block.resnets.0", "response", (16, 4, 4), 0.25))
    live = a.flatten(1).abs().sum(1) > 0
    assert int(live.sum()) == 4 and set(a.unique().tolist()) == {-1.0, 0.0, 1.0}


def test_key_material_is_deterministic(base):
    x = diffusion.images("train")
    for spec in ("aiao", "trigger-noise"):
        scheme = aiao.make_scheme(spec).for_unet(base)
        one = scheme.material(base, x, torch.Generator().manual_seed(3))
        two = scheme.material(base, x, torch.Generator().manual_seed(3))
        other = scheme.material(base, x, torch.Generator().manual_seed(4))
        assert all(torch.equal(one[k], two[k]) for k in one)
        assert not all(torch.equal(one[k], other[k]) for k in one)


def test_profile_measures_every_block(base, tmp_path):
    prof = aiao.profile(base, diffusion.images("train", [0, 1]), steps=5)
    assert prof.blocks == tuple(aiao.blocks(base))
    assert (prof.weight_change > 0).all() and (prof.feature_change > 0).all()
    lazy = prof.lazy(0.5)
    assert len(lazy) == round(0.5 * len(prof.blocks)) and list(lazy) == [b for b in prof.blocks if b in lazy]
    assert max(prof.weight_change[prof.blocks.index(b)] for b in lazy) <= min(
        prof.weight_change[prof.blocks.index(b)] for b in prof.busy(len(prof.blocks) - len(lazy))
    )
    assert prof.plot(tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_marked_is_detected_and_clean_is_not(marked, clean):
    unet, key = marked
    v = aiao.verify(key, unet)
    assert v.related and v.score >= 0.9 and v.p_value < 1e-6, v.summary()
    for model in (clean[1], tiny(2)):  # a fine-tune of the unmarked UNet, and an independent UNet
        v = aiao.verify(key, model)
        assert not v.related and v.p_value > 0.05, v.summary()


def test_watermark_keeps_sampling(base, marked):
    """Normal generation from the same seeds moves by under 0.05 per pixel (in [-1, 1]); the trigger is never
    met without the key."""
    before, after = diffusion.sample(base, 16, steps=20), diffusion.sample(marked[0], 16, steps=20)
    assert float((after - before).abs().mean()) < 0.05


def test_marked_survives_fine_tuning(marked):
    unet, key = marked
    attacked = copy.deepcopy(unet)
    diffusion.train(attacked, diffusion.images("train", [5, 6, 7, 8, 9]), 30, lr=1e-4, schedule="constant", seed=3)
    assert aiao.verify(key, attacked).related


def test_trigger_noise_baseline(base, clean):
    unet, key = aiao.embed(base, "trigger-noise(steps=10)", diffusion.images("train"), 1, steps=100, lr=2e-3)
    key = aiao.calibrate(key, clean[0])
    assert aiao.verify(key, unet).related
    assert not aiao.verify(key, clean[1]).related


def test_key_round_trip_and_tampering(marked, tmp_path):
    unet, key = marked
    path = key.save(tmp_path / "k.mpk")
    loaded = aiao.DiffusionKey.load(path)
    assert loaded.scheme == key.scheme and loaded.threshold == key.threshold
    np.testing.assert_array_equal(loaded.null_scores, key.null_scores)
    assert aiao.verify(loaded, unet).score == aiao.verify(key, unet).score
    assert "DiffusionKey(aiao" in repr(key) and len(repr(key)) < 300
    header = {k: v for k, v in container.peek(path, "key")[0].items() if k not in ("checksum", "null_strata")}
    tensors = {f"material.{k}": v for k, v in key.tensors.items()}  # a key of the previous release
    old = container.write(tmp_path / "old.mpk", header, {**tensors, "null_rates": torch.tensor(key.null_scores)})
    np.testing.assert_array_equal(aiao.DiffusionKey.load(old).null_scores, key.null_scores)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(FileFormatError):
        aiao.DiffusionKey.load(path)


def test_bad_suspects_and_keys(marked, base):
    unet, key = marked
    with pytest.raises(ConfigError, match="not calibrated"):
        aiao.verify(aiao.DiffusionKey(key.scheme, 0, key.tensors), unet)
    with pytest.raises(AccessError, match="weights"):
        aiao.verify(key, lambda x: x)
    wanted = aiao.AIAO("down_blocks.0.resnets.0+up_blocks.2.resnets.0")  # a 2-level UNet has no up_blocks.2
    other = aiao.DiffusionKey(
        wanted, 0, {**key.tensors, "scale": torch.ones(2)}, threshold=0.1, null_scores=np.zeros(2)
    )
    with pytest.raises(AccessError, match="no block"):
        aiao.verify(other, diffusion.make_unet(channels=(8, 8)))
    with pytest.raises(ConfigError, match="no blocks"):
        aiao.make_scheme("aiao(blocks=nope+up_blocks.0.resnets.0)").for_unet(base)


def test_lora_starts_neutral_and_merges(base):
    unet = copy.deepcopy(base)
    x_t, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 500])
    with torch.no_grad():
        before = base(x_t, t).sample
    params = diffusion.add_lora(unet, rank=2)
    assert params and all(p.requires_grad for p in params)
    assert not any(p.requires_grad for n, p in unet.named_parameters() if "original" in n)
    with torch.no_grad():
        torch.testing.assert_close(unet(x_t, t).sample, before)
    diffusion.train(unet, diffusion.images("train"), 3, params=params, lr=1e-2)
    with torch.no_grad():
        tuned = unet(x_t, t).sample
    diffusion.merge_lora(unet)
    assert not any("original" in n for n, _ in unet.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(unet(x_t, t).sample, tuned)
    assert not torch.allclose(tuned, before)


def test_quality_proxy_tells_digits_from_noise():
    real = diffusion.images("train")[:128]
    noise = torch.rand(128, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert diffusion.frechet(real) < 0.1 * diffusion.frechet(noise)
    assert 0.9 < diffusion.confidence(real) <= 1


def test_cli_profile_embed_calibrate_verify(base, clean, tmp_path):
    from typer.testing import CliRunner

    from modelprint.cli import app

    def run(*args):
        return CliRunner().invoke(app, ["diffusion", *map(str, args)])

    paths = [diffusion.save(m, tmp_path / f"clean{i}") for i, m in enumerate(clean[0])]
    r = run("profile", paths[0], "-o", tmp_path / "profile.png", "--steps", "3", "--classes", "0,1")
    assert r.exit_code == 0 and "lazy" in r.output and (tmp_path / "profile.png").exists(), r.output
    key, marked = tmp_path / "k.mpk", tmp_path / "marked"
    r = run(
        "embed", paths[0], "-o", marked, "--key", key, "-s", SPEC, "--steps", "100", "--lr", "2e-3", "--key-seed", "5"
    )
    assert r.exit_code == 0, r.output
    r = run("calibrate", key, *[a for p in paths for a in ("--null", p)], "--trials", "32")
    assert r.exit_code == 0 and "threshold" in r.output, r.output
    r = run("verify", key, marked, "--json")
    assert r.exit_code == 0 and '"related": true' in r.output, r.output
    assert run("verify", key, diffusion.save(clean[1], tmp_path / "held-out")).exit_code == 1
    r = run("verify", tmp_path / "profile.png", marked)
    assert isinstance(r.exception, FileFormatError) and "profile.png" in str(r.exception)
    assert isinstance(run("embed", paths[0], "-o", marked, "--key", key, "-s", "nope").exception, ConfigError)
