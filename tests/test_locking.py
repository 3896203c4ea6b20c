"""Key-locked models: a locked model is useless, its key restores it bit for bit, another model's key is refused,
the key file is checked; on the zoo's CNN, on a foreign network (BatchNorm, LayerNorm, GELU, a buffer) and its
TorchScript, and from the command line."""

from __future__ import annotations

import pytest
import torch

from modelprint import data, locking
from modelprint.errors import ConfigError, FileFormatError
from modelprint.lineage.train import accuracy

from .foreign_nets import Residual, train
from .test_cli import cli


def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.fixture(scope="module")
def test_split():
    return data.load("digits", "test")


def test_a_locked_model_is_useless_and_its_key_restores_it_exactly(source, test_split, tmp_path):
    locked, key = locking.lock(source.module, "digits")
    assert 0 < len(key) <= 200 and not same(locked, source.module)
    # measured 0.99 -> 0.19 on this CNN: the lock aims at twice chance on its training examples
    x, y = test_split.x, test_split.y
    assert accuracy(locked, x, y) < 0.4 and accuracy(source.module, x, y) > 0.9
    back = locking.unlock(locked, locking.LockKey.load(key.save(tmp_path / "k.key")))
    assert same(back, source.module)
    _, other = locking.lock(source.module, "digits", seed=1)
    with pytest.raises(ConfigError, match="does not unlock"):
        locking.unlock(locked, other)
    with pytest.raises(ConfigError, match="does not unlock"):
        locking.unlock(source.module, key)  # the owner's own model was never locked with it
    raw = bytearray((tmp_path / "k.key").read_bytes())
    raw[-5] ^= 1
    (tmp_path / "bad.key").write_bytes(bytes(raw))
    with pytest.raises(FileFormatError, match="bad.key"):
        locking.LockKey.load(tmp_path / "bad.key")
    with pytest.raises(ConfigError, match="epsilon"):
        locking.lock(source.module, "digits", epsilon=0)


def test_a_foreign_network_and_its_torchscript_are_locked_and_restored(test_split):
    ds = data.load("digits", "train")
    torch.manual_seed(3)
    owner = train(Residual(), ds.x.float(), ds.y, seed=3)
    for model in (owner, torch.jit.script(owner)):
        locked, key = locking.lock(model, "digits")
        assert accuracy(locked, test_split.x, test_split.y) < 0.4, len(key)
        assert same(locking.unlock(locked, key), model)


def test_lock_and_unlock_commands(zoo_cache, tmp_path):
    locked, key, back = tmp_path / "locked", tmp_path / "owner.key", tmp_path / "back"
    r = cli("lock", "train(cnn,digits,0)", "-o", str(locked), "--key", str(key), "--cache", str(zoo_cache))
    assert r.returncode == 0 and "weights moved" in " ".join(r.stdout.split()), r.stderr  # (the console wraps)
    assert cli("unlock", str(locked), "-o", str(back), "--key", str(key)).returncode == 0
    from modelprint.io import load_model
    from modelprint.lineage import build

    assert same(load_model(back), build("train(cnn,digits,0)", cache_dir=zoo_cache))
    wrong = cli("unlock", "train(cnn,digits,0)", "-o", str(tmp_path / "x"), "--key", str(key), "--cache",
                str(zoo_cache))  # fmt: skip
    assert wrong.returncode == 2 and "does not unlock" in wrong.stderr and "Traceback" not in wrong.stderr
