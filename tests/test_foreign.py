"""Models modelprint did not build, through the installed command line: a custom network (input scaling,
BatchNorm1d, LayerNorm, GELU, Dropout, a buffer, a residual add) trained by its own loop and handed over as a
state dict, a .safetensors file, a TorchScript archive and an ONNX export; and a tabular MLP on (n, F) vectors.
Each test asserts on verdicts and exit codes (0 related, 1 not related, 2 error)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from modelprint import data

from .foreign_nets import Residual, Tabular, train
from .test_cli import cli, command
from .test_remote import free_port

NETS = str(Path(__file__).with_name("foreign_nets.py"))
RESIDUAL = ["--arch", f"{NETS}:Residual"]


def weights(model: torch.nn.Module, path: Path) -> str:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The owner in every format, six independent networks of its class, and a cache folder."""
    d = tmp_path_factory.mktemp("foreign")
    ds = data.load("digits", "train")
    x, y = ds.x.float(), ds.y

    def make(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return train(Residual(), x, y, seed)

    owner = make(1)
    torch.save(owner.state_dict(), d / "owner.pt")
    torch.jit.script(owner).save(str(d / "owner.ts"))
    torch.onnx.export(owner, (x[:2],), d / "owner.onnx", dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "n"}})
    return {
        "dir": d, "pt": str(d / "owner.pt"), "ts": str(d / "owner.ts"), "onnx": str(d / "owner.onnx"),
        "nulls": [weights(make(s), d / f"independent{s}.safetensors") for s in range(2, 7)],
        "more_nulls": [weights(make(s), d / f"independent{s}.safetensors") for s in range(8, 18)],
        "held_out": weights(make(7), d / "independent7.safetensors"), "cache": ["--cache", str(d / "cache")],
    }  # fmt: skip


@pytest.fixture(scope="module")
def fingerprint(files):
    fp = str(files["dir"] / "owner.fp")
    made = cli(*RESIDUAL, "extract", files["pt"], "-s", "AKH", "-b", "100", "-o", fp, *files["cache"])
    assert made.returncode == 0, made.stderr
    # 15 independent networks: 5 leave a fitted tail too narrow (an independent one then scored p = 0.017)
    nulls = [a for n in files["nulls"] + files["more_nulls"] for a in ("-n", n)]
    calibrated = cli(*RESIDUAL, "calibrate", fp, *nulls, "--fpr", "0.05", *files["cache"])
    assert calibrated.returncode == 0, calibrated.stderr
    return fp


def verdict(result) -> dict:
    assert result.returncode in (0, 1), result.stderr
    v = json.loads(result.stdout)
    assert result.returncode == (0 if v["related"] else 1)
    return v


def test_every_format_of_the_owner_is_related_and_an_independent_network_is_not(files, fingerprint):
    # an independent network is decided at 0.001, not at the calibration's 0.05: a test at the nominal rate would
    # fail on about one machine in twenty by design (this one scores p = 0.013 here; derived copies p < 1e-100)
    for suspect in (files["ts"], files["onnx"], f"load({files['ts']},digits)->finetune(0,epochs=3)",
                    f"load({files['ts']},digits)->prune(0.3)"):  # fmt: skip
        v = verdict(cli(*RESIDUAL, "verify", fingerprint, suspect, "--json", *files["cache"]))
        assert v["related"] and v["p_value"] < 1e-3 and v["score"] > v["threshold"] + 0.05, (suspect, v)
    v = verdict(cli(*RESIDUAL, "verify", fingerprint, files["held_out"], "--alpha", "0.001", "--json", *files["cache"]))
    assert not v["related"] and v["p_value"] > 0.001, v


def test_two_schemes_combine_into_one_verdict_on_every_format(files, fingerprint):
    # verify --and: AKH and SAC-w of the same owner, Holm-combined, through TorchScript and ONNX suspects
    second = str(files["dir"] / "owner-sac.fp")
    made = cli(*RESIDUAL, "extract", files["pt"], "-s", "SAC-w", "-b", "40", "-o", second, *files["cache"])
    assert made.returncode == 0, made.stderr
    nulls = [a for n in files["nulls"] + files["more_nulls"] for a in ("-n", n)]
    assert cli(*RESIDUAL, "calibrate", second, *nulls, "--fpr", "0.05", *files["cache"]).returncode == 0
    both = [*RESIDUAL, "verify", fingerprint, "--and", second]
    for suspect in (files["ts"], files["onnx"]):
        v = verdict(cli(*both, suspect, "--json", *files["cache"]))
        assert v["related"] and v["p_value"] < 1e-3 and v["method"] == "holm over 2 schemes", (suspect, v)
    v = verdict(cli(*both, files["held_out"], "--alpha", "0.001", "--json", *files["cache"]))
    assert not v["related"] and v["queries"] == 140, v


def test_weights_without_their_class_are_one_clear_error(files, fingerprint):
    r = cli("verify", fingerprint, files["held_out"])
    assert r.returncode == 2 and "--arch" in r.stderr and "Traceback" not in r.stderr
    r = cli("--arch", f"{NETS}:Nope", "verify", fingerprint, files["held_out"])
    assert r.returncode == 2 and "has no 'Nope'" in r.stderr
    r = cli(*RESIDUAL, "--arch-kwargs", '{"hidden": 7}', "verify", fingerprint, files["held_out"])
    assert r.returncode == 2 and "shape mismatch" in r.stderr
    r = cli("zoo", "build", f"load({files['onnx']},digits)->finetune(0)", *files["cache"])
    assert r.returncode == 2 and "only answers queries" in r.stderr
    r = cli("extract", files["onnx"], "-s", "IPGuard", "-b", "20", "-o", str(files["dir"] / "x.fp"), *files["cache"])
    assert r.returncode == 2 and "needs the owner's gradients" in r.stderr and "Divergent" in r.stderr


def test_zoo_show_reads_every_format(files):
    for args, expected in (([files["ts"]], "TorchScript"), ([files["onnx"]], "ONNX"), ([files["pt"]], "Residual")):
        r = cli(*RESIDUAL, "zoo", "show", *args)
        assert r.returncode == 0 and expected in r.stdout, r.stdout + r.stderr


def test_an_onnx_owner_served_with_api_keys_is_recognised_over_http(files, fingerprint):
    keys = files["dir"] / "keys"
    keys.write_text("auditor auditor-0123456789abcdef\n")
    port = free_port()
    server = subprocess.Popen(
        [*command(), "serve", files["onnx"], "--port", str(port), "--api-keys", str(keys)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            if ready(url):
                break
            time.sleep(0.1)
        refused = cli("verify", fingerprint, "--url", url)
        assert refused.returncode == 2 and "401" in refused.stderr
        env = {**os.environ, "MODELPRINT_API_KEY": "auditor-0123456789abcdef"}
        assert verdict(cli("verify", fingerprint, "--url", url, "--json", env=env))["related"]
    finally:
        server.terminate()
        server.communicate(timeout=10)


def ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/v2/health/ready").status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.parametrize("scheme", ["trigger-set", "uchida(bits=32)"])
def test_a_torchscript_owner_takes_a_watermark(files, scheme):
    d, name = files["dir"], scheme.split("(")[0]
    made = cli("watermark", "embed", files["ts"], "-o", str(d / name), "--key", str(d / f"{name}.key"),
               "--scheme", scheme, *files["cache"])  # fmt: skip
    assert made.returncode == 0 and (d / f"{name}.pt").is_file() and "not learnt" not in made.stderr, made.stderr
    assert cli("watermark", "verify", str(d / f"{name}.key"), str(d / f"{name}.pt")).returncode == 0
    assert cli("watermark", "verify", str(d / f"{name}.key"), files["ts"]).returncode == 1


def test_a_tabular_owner_on_feature_vectors(tmp_path):
    from sklearn.datasets import make_classification

    x, y = make_classification(900, 12, n_informative=8, n_classes=3, random_state=0)
    split = np.repeat(["train", "attacker", "test"], 300)
    np.savez(tmp_path / "table.npz", x=x.astype(np.float32), y=y, split=split)
    table = f"npz:{tmp_path / 'table.npz'}"
    xt, yt = torch.from_numpy(x[:300]).float(), torch.from_numpy(y[:300])

    def make(seed: int) -> str:
        torch.manual_seed(seed)
        return weights(train(Tabular(), xt, yt, seed), tmp_path / f"tabular{seed}.safetensors")

    arch = ["--arch", f"{NETS}:Tabular", "--arch-kwargs", '{"features": 12, "classes": 3}']
    fp, cache = str(tmp_path / "t.fp"), ["--cache", str(tmp_path / "cache")]
    owner = make(1)
    assert cli(*arch, "extract", owner, "-s", "AKH", "-d", table, "-b", "60", "-o", fp, *cache).returncode == 0
    nulls = [a for s in range(2, 7) for a in ("-n", make(s))]
    assert cli(*arch, "calibrate", fp, *nulls, "--fpr", "0.05", *cache).returncode == 0
    assert verdict(cli(*arch, "verify", fp, owner, "--json", *cache))["related"]
    assert not verdict(cli(*arch, "verify", fp, make(7), "--json", *cache))["related"]


def test_white_box_comparison_follows_layer_norm_gelu_buffers_and_residuals(files):
    permuted = f"load({files['pt']},digits)->permute(1)"
    nulls = [a for n in files["nulls"] for a in ("-n", n)]
    shape = ["--input-shape", "1,8,8", "--json", *files["cache"]]
    v = verdict(cli(*RESIDUAL, "compare", files["pt"], permuted, *nulls, *shape))
    assert v["related"] and v["score"] > 0.99, v
    v = verdict(cli(*RESIDUAL, "compare", files["pt"], files["held_out"], *nulls, *shape))
    assert not v["related"] and v["score"] < 0.7, v


class Scaled(torch.nn.Module):
    """Input scaling by constants, GroupNorm, SiLU and a per-unit learnt gain."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3)
        self.norm = torch.nn.GroupNorm(1, 8)
        self.fc = torch.nn.Linear(8 * 6 * 6, 16)
        self.gain = torch.nn.Parameter(torch.rand(16) + 0.5)
        self.out = torch.nn.Linear(16, 10)

    def forward(self, x):
        h = torch.nn.functional.silu(self.norm(self.conv(x * 2 - 1)))
        return self.out(torch.relu(self.fc(h.flatten(1))) * self.gain)


def test_permuting_a_foreign_network_keeps_its_function_and_is_found():
    from modelprint.fingerprint.matching import matching_agreement
    from modelprint.symmetry import permute

    torch.manual_seed(0)
    net = Scaled().eval()
    other = permute(Scaled().eval(), (1, 8, 8), seed=3)  # another network, permuted: unrelated
    twin = permute(copy.deepcopy(net), (1, 8, 8), seed=3)
    x = torch.randn(16, 1, 8, 8)
    torch.testing.assert_close(twin(x), net(x), atol=1e-5, rtol=1e-4)
    assert not torch.equal(twin.fc.weight, net.fc.weight)
    assert matching_agreement(net, twin, (1, 8, 8))[0] > 0.99
    assert matching_agreement(net, other, (1, 8, 8))[0] < 0.7


def test_a_custom_benchmark_with_an_onnx_source_skips_what_needs_gradients(files):
    d = files["dir"]
    listing = d / "mine.yaml"
    listing.write_text(
        "dataset: digits\nmodels:\n"
        f"  - {{model: {files['onnx']}, source: owner, task: source}}\n"
        f"  - {{model: {files['ts']}, source: owner, task: same}}\n"
        + "".join(f"  - {{model: {n}}}\n" for n in files["nulls"])
    )
    r = cli(*RESIDUAL, "bench", "run", f"custom:{listing}", "-o", str(d / "run"), "--schemes", "AKH,IPGuard",
            "--budgets", "20", *files["cache"])  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "skipped IPGuard" in r.stdout and "gradients" in r.stdout
    assert "1.00/1.00" in " ".join(r.stdout.split())  # AKH tells the TorchScript copy from the 5 negatives


def test_a_foreign_networks_poisoned_training_set_is_sifted(tmp_path):
    """Poisoning by the owner's own code, not modelprint's operations: a diagonal of bright pixels in the top-left
    corner on a tenth of the digits training set, relabelled 5, learnt by the foreign network's own loop (99.6%
    attack success). The command reads its hidden layer from a state dict and its class, and scores every example.
    Measured, not asserted: through this network's LayerNorm-ed residual features neither detector isolates the
    poisoned examples (README), unlike on the zoo's CNNs and LeNets (tests/test_sift.py)."""
    ds = data.load("digits", "train")
    x, y = ds.x.float().clone(), ds.y.clone()
    chosen = torch.randperm(len(y), generator=torch.Generator().manual_seed(3))[: len(y) // 10]
    chosen = chosen[y[chosen] != 5]
    for i in range(3):
        x[chosen, 0, i, i] = float(x.max())
    y[chosen] = 5
    torch.manual_seed(4)
    model = weights(train(Residual(), x, y, 4), tmp_path / "m.safetensors")
    np.savez(tmp_path / "train.npz", x=x.numpy(), y=y.numpy())
    for detector in ("activation-clustering", "spectral-signatures(eps=0.1)"):
        csv = tmp_path / "sift.csv"
        r = cli(*RESIDUAL, "backdoor", "sift", model, str(tmp_path / "train.npz"), "--detector", detector,
                "--csv", str(csv))  # fmt: skip
        assert r.returncode in (0, 1) and "examples removed as poisoned" in r.stdout, r.stdout + r.stderr
        rows = [line.split(",") for line in csv.read_text().splitlines()[1:]]
        assert len(rows) == len(y) and all(int(c) == int(label) for (_, c, _, _), label in zip(rows, y, strict=True))
    bare = cli("backdoor", "sift", model, str(tmp_path / "train.npz"))  # weights without their class
    assert bare.returncode == 2 and "--arch" in bare.stderr and "Traceback" not in bare.stderr
