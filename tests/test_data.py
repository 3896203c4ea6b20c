import numpy as np
import pytest
import torch
from PIL import Image

from modelprint import data
from modelprint.errors import ConfigError, DataError


@pytest.mark.parametrize("name,shape", [("digits", (1, 8, 8)), ("mnist1d", (1, 40))])
def test_splits_disjoint_stratified_deterministic(name, shape):
    src = data.source(name)
    idx = [src.splits[s] for s in data.SPLITS]
    assert sum(len(i) for i in idx) == len(src.y)
    assert len(np.unique(np.concatenate(idx))) == len(src.y)  # disjoint and covering
    assert 0.2 < len(src.splits["attacker"]) / len(src.y) < 0.3  # a thief has about a quarter
    whole = np.bincount(src.y) / len(src.y)
    for i in idx:  # stratified: every split keeps the class proportions
        assert np.abs(np.bincount(src.y[i], minlength=10) / len(i) - whole).max() < 0.02
    again = data.stratified_splits(src.y)
    assert all(np.array_equal(again[s], src.splits[s]) for s in data.SPLITS)
    ds = data.load(name, "train")
    assert isinstance(ds, torch.utils.data.TensorDataset)
    assert ds.input_shape == shape and ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
    assert ds.num_classes == 10


def test_digits_scaled_to_unit_interval():
    x = data.load("digits", "all").x
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0


def test_mnist1d_generation_leaves_global_rng_alone():
    data.source.cache_clear()
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    data.load("mnist1d", "test")
    assert np.random.rand() == expected


def test_derived_datasets():
    base, c = data.load("digits", "train"), data.load("digits-c", "train")
    assert torch.equal(base.y, c.y) and not torch.equal(base.x, c.x)
    assert (base.x != c.x).flatten(1).any(1).float().mean() > 0.9  # nearly every sample is corrupted
    parity = data.load("digits-parity", "test")
    assert parity.num_classes == 2 and set(parity.y.tolist()) == {0, 1}
    upper = data.load("mnist1d-upper", "attacker")
    assert upper.num_classes == 5 and set(upper.y.tolist()) == set(range(5))


def test_unknown_names():
    with pytest.raises(ConfigError, match="unknown dataset 'digitz'.*digits"):
        data.load("digitz")
    with pytest.raises(ConfigError, match="unknown split"):
        data.load("digits", "validation")


def test_npz_plain_and_with_splits(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((120, 6)).astype(np.float32), np.repeat(np.arange(3), 40)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    ds = data.load(f"npz:{tmp_path / 'a.npz'}", "train")
    assert ds.input_shape == (6,) and ds.num_classes == 3 and len(ds) == 60  # tabular rows stay vectors
    split = np.array(["train"] * 70 + ["attacker"] * 20 + ["test"] * 30)
    np.savez(tmp_path / "b.npz", x=x, y=y, split=split)
    assert len(data.load(f"npz:{tmp_path / 'b.npz'}", "test")) == 30
    np.savez(tmp_path / "c.npz", x_train=x[:90], y_train=y[:90], x_test=x[90:], y_test=y[90:])
    sizes = [len(data.load(f"npz:{tmp_path / 'c.npz'}", s)) for s in data.SPLITS]
    assert sizes == [60, 30, 30]


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    with pytest.raises(DataError, match="obj.npz: not a plain-array"):
        data.load(f"npz:{tmp_path / 'obj.npz'}")
    np.savez(tmp_path / "keys.npz", inputs=np.zeros((4, 2)))
    with pytest.raises(DataError, match="expected arrays 'x' and 'y'"):
        data.load(f"npz:{tmp_path / 'keys.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="junk.npz"):
        data.load(f"npz:{tmp_path / 'junk.npz'}")
    np.savez(tmp_path / "nan.npz", x=np.full((4, 2), np.nan), y=np.zeros(4, dtype=int))
    with pytest.raises(DataError, match="NaN"):
        data.load(f"npz:{tmp_path / 'nan.npz'}")


def test_folder_of_images(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (5, 7), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    ds = data.load(f"folder:{tmp_path / 'imgs'}", "all")
    assert ds.input_shape == (1, 5, 7) and ds.num_classes == 2 and len(ds) == 24
    assert 0.0 <= float(ds.x.min()) and float(ds.x.max()) <= 1.0
    Image.fromarray(np.zeros((6, 6), dtype=np.uint8)).save(tmp_path / "imgs" / "dog" / "odd.png")
    data.source.cache_clear()
    with pytest.raises(DataError, match="odd.png: image size"):
        data.load(f"folder:{tmp_path / 'imgs'}")


def test_tabular_npz_runs_through_train_and_fingerprint(tmp_path):
    # a user's tabular data (n, F): the README's calls, with subpackages reached as attributes of the package
    import modelprint as mp

    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 12)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 0.5)
    np.savez(tmp_path / "tab.npz", x=x, y=y)
    name = f"npz:{tmp_path / 'tab.npz'}"
    owner = mp.lineage.build(f"train(mlp,{name},0)", cache_dir=False)
    fp = mp.extract(owner, "AKH", name, budget=20)
    assert fp.queries.shape == (20, 12) and mp.score(fp, owner) == 1.0
    assert callable(mp.watermark.embed) and callable(mp.nullbank.build)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = mp.nothing
