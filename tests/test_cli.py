import csv
import subprocess
import sys

from typer.testing import CliRunner

from modelprint import __version__
from modelprint.cli import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_zoo_build_show_and_ops(zoo_cache, tmp_path):
    expr = "train(mlp,digits,7,epochs=2)->quantize(int8)"
    result = runner.invoke(app, ["zoo", "build", expr, "--cache", str(zoo_cache), "-o", str(tmp_path / "t.csv")])
    assert result.exit_code == 0, result.output
    assert "digits" in result.output and "test acc" in result.output
    with (tmp_path / "t.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["lineage"] == expr and float(rows[0]["test_accuracy"]) > 0.5
    shown = runner.invoke(app, ["zoo", "show", expr, "--cache", str(zoo_cache), "--json"])
    assert shown.exit_code == 0 and '"arch": "mlp"' in shown.output and "sha256" in shown.output
    ops = runner.invoke(app, ["zoo", "ops"])
    assert ops.exit_code == 0 and "adv_label_extract" in ops.output


def test_data_list():
    result = runner.invoke(app, ["data", "list"])
    assert result.exit_code == 0 and "mnist1d-parity" in result.output and "npz:PATH" in result.output


def cli(*args):
    return subprocess.run([sys.executable, "-m", "modelprint.cli", *args], capture_output=True, text=True, timeout=120)


def test_errors_are_one_line(tmp_path):
    bad = cli("zoo", "build", "train(cnn,digits,0)->prune(2)", "--cache", str(tmp_path))
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().startswith("error:") and "prune amount" in bad.stderr
    missing = cli("zoo", "show", str(tmp_path / "nothing"))
    assert missing.returncode == 1 and "no such model folder" in missing.stderr
    gpu = cli("zoo", "build", "train(mlp,digits,0)", "--device", "tpu")
    assert gpu.returncode == 1 and "--device must be" in gpu.stderr
