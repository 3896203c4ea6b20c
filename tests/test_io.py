import json
import os
import random

import numpy as np
import pytest
import torch

from modelprint import load_model, make_net, save_model
from modelprint.errors import ConfigError, ModelFileError, UnsafeFileError


@pytest.fixture
def net():
    torch.manual_seed(0)
    return make_net("lenet", (1, 8, 8), 10).eval()


def same_function(a, b, shape=(1, 8, 8)):
    x = torch.randn(16, *shape)
    with torch.no_grad():
        return torch.allclose(a(x.to(next(a.parameters()).dtype)).float(), b(x.to(next(b.parameters()).dtype)).float())


def test_folder_round_trip(net, tmp_path):
    path = save_model(net, tmp_path / "m", meta={"note": "hi"})
    config = json.loads((path / "config.json").read_text())
    assert config["format_version"] == 1 and config["arch"]["arch"] == "lenet" and len(config["sha256"]) == 64
    loaded = load_model(path)
    assert same_function(net, loaded) and loaded.mp_config == net.mp_config
    half = save_model(net.half(), tmp_path / "h")
    assert next(load_model(half).parameters()).dtype == torch.float16


def test_save_replaces_atomically(net, tmp_path):
    save_model(net, tmp_path / "m")
    save_model(make_net("lenet", (1, 8, 8), 10), tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary or old folders left


def test_module_without_config_cannot_be_saved(tmp_path):
    with pytest.raises(ConfigError, match="no architecture config"):
        save_model(torch.nn.Linear(2, 2), tmp_path / "x")


def one_line(excinfo, *fragments):
    msg = str(excinfo.value)
    assert "\n" not in msg and "Traceback" not in msg
    for f in fragments:
        assert f in msg, msg


def test_tampered_weights_rejected(net, tmp_path):
    path = save_model(net, tmp_path / "m")
    raw = bytearray((path / "model.safetensors").read_bytes())
    raw[-5] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ModelFileError) as e:
        load_model(path)
    one_line(e, "model.safetensors", "checksum mismatch")


def test_corrupt_files_give_one_line_errors(net, tmp_path):
    path = save_model(net, tmp_path / "m")
    (path / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError) as e:
        load_model(path)
    one_line(e, "config.json", "not valid JSON")

    path = save_model(net, tmp_path / "v")
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "format_version": 99}))
    with pytest.raises(ModelFileError) as e:
        load_model(path)
    one_line(e, "format version 99")

    path = save_model(net, tmp_path / "a")
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "arch": {**cfg["arch"], "arch": "vgg"}}))
    with pytest.raises(ModelFileError) as e:
        load_model(path)
    one_line(e, "unknown or invalid architecture", "vgg")

    path = save_model(net, tmp_path / "s")
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "arch": {**cfg["arch"], "width": 8}}))
    with pytest.raises(ModelFileError) as e:
        load_model(path)
    one_line(e, "shape mismatch for")

    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "w.safetensors")
    (tmp_path / "w.safetensors").write_bytes((tmp_path / "w.safetensors").read_bytes()[:200])
    with pytest.raises(ModelFileError) as e:
        load_model(tmp_path / "w.safetensors", arch="lenet", input_shape=[1, 8, 8], num_classes=10)
    one_line(e, "w.safetensors", "corrupt or truncated")

    for seed in range(30):  # junk bytes make the unpickler fail in many ways; each must be one clear error
        (tmp_path / "junk.pt").write_bytes(random.Random(seed).randbytes(300))
        with pytest.raises(ModelFileError) as e:
            load_model(tmp_path / "junk.pt")
        one_line(e, "junk.pt", "corrupt or truncated checkpoint")

    with pytest.raises(ModelFileError, match="no such file"):
        load_model(tmp_path / "missing")


class Payload:
    """Pickles into a call of os.system: loading it with plain pickle would run the command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_never_runs(net, tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pt"
    torch.save({"state_dict": net.state_dict(), "extra": Payload(marker)}, ckpt)
    with pytest.raises(UnsafeFileError) as e:
        load_model(ckpt, arch="lenet", input_shape=[1, 8, 8], num_classes=10)
    one_line(e, "evil.pt", "refused", "safetensors")
    assert not marker.exists()


def test_plain_state_dict_needs_architecture(net, tmp_path):
    torch.save({"state_dict": net.state_dict()}, tmp_path / "ok.pt")
    with pytest.raises(ConfigError, match="holds only weights; give the network.s class"):
        load_model(tmp_path / "ok.pt")
    loaded = load_model(tmp_path / "ok.pt", arch="lenet", input_shape=[1, 8, 8], num_classes=10)
    assert same_function(net, loaded)


def test_torchscript(net, tmp_path):
    torch.jit.trace(net, torch.randn(2, 1, 8, 8)).save(str(tmp_path / "m.pt"))
    assert same_function(net, load_model(tmp_path / "m.pt"))


def test_onnx_model_not_built_by_us(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "m.onnx")
    model = load_model(tmp_path / "m.onnx")
    assert model.input_shape == (4,) and model.num_classes == 3
    x = torch.from_numpy(rng.normal(size=(5, 4)).astype(np.float32))
    assert torch.allclose(model.logits(x), x @ torch.from_numpy(w) + torch.from_numpy(b), atol=1e-5)
    assert model.queries == 5
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(ModelFileError, match="bad.onnx: not a valid ONNX model"):
        load_model(tmp_path / "bad.onnx")
