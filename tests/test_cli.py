import csv
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

import modelprint as mp
from modelprint import __version__
from modelprint.cli import app
from modelprint.errors import ConfigError

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


def command() -> list[str]:
    """The installed ``modelprint`` executable (the console script beside this Python)."""
    exe = Path(sys.executable).with_name("modelprint")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "modelprint.cli"]


def cli(*args, env: dict[str, str] | None = None):
    """``modelprint ARGS`` in a subprocess. The timeout catches a hang, not slowness: on a loaded 2-core machine a
    command that trains (a watermark, a comparison with its nulls) has taken over 300 s."""
    return subprocess.run([*command(), *args], capture_output=True, text=True, timeout=900, env=env)


def test_errors_are_one_line(tmp_path):
    bad = cli("zoo", "build", "train(cnn,digits,0)->prune(2)", "--cache", str(tmp_path))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().startswith("error:") and "prune amount" in bad.stderr
    missing = cli("zoo", "show", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "no such model file or folder" in missing.stderr
    gpu = cli("zoo", "build", "train(mlp,digits,0)", "--device", "tpu")
    assert gpu.returncode == 2 and "--device must be" in gpu.stderr
    for usage in (cli("no-such-command"), cli("verify")):  # a usage error is the user's, not a bug of ours
        assert usage.returncode == 2 and "Error:" in usage.stderr and "internal error" not in usage.stderr


def test_extract_calibrate_verify(zoo_cache, tmp_path):
    fp = tmp_path / "owner.fp"
    cache = ["--cache", str(zoo_cache)]
    src = "train(cnn,digits,0)"
    made = runner.invoke(app, ["extract", src, "--scheme", "AKH", "--budget", "40", "-o", str(fp), *cache])
    assert made.exit_code == 0, made.output
    nulls = [x for a in ("lenet", "mlp") for s in (4, 5) for x in ("--null", f"train({a},digits,{s})")]
    cal = runner.invoke(app, ["calibrate", str(fp), *nulls, "--fpr", "0.05", *cache])
    assert cal.exit_code == 0 and "threshold" in cal.output, cal.output
    related = runner.invoke(app, ["verify", str(fp), f"{src}->finetune(1)", *cache])
    assert related.exit_code == 0 and "RELATED" in related.output, related.output
    unrelated = runner.invoke(app, ["verify", str(fp), "train(mlp,digits,3)", "--json", *cache])
    assert unrelated.exit_code == 1 and '"related": false' in unrelated.output, unrelated.output
    # the installed executable exits with the verdict's status too (not only typer's runner)
    assert cli("verify", str(fp), "train(mlp,digits,3)", *cache).returncode == 1
    # two null models that disagree wildly cannot support p <= 0.001 at any score: inconclusive, exit 3
    wide = tmp_path / "wide.fp"
    mp.calibrate(mp.Fingerprint.load(fp), null_scores=[0.05, 0.95]).save(wide)
    unsure = cli("verify", str(wide), src, "--alpha", "0.001", *cache)
    assert unsure.returncode == 3 and "INCONCLUSIVE" in unsure.stdout and "add" in unsure.stdout, unsure.stdout
    seq = runner.invoke(app, ["verify", str(fp), src, "--sequential", "--json", *cache])
    assert seq.exit_code == 0 and "queries_saved" in seq.output, seq.output
    error = cli("verify", str(fp), str(tmp_path / "no-such-model"))
    assert error.returncode == 2 and error.stderr.startswith("error:") and "no such model" in error.stderr
    tampered = tmp_path / "tampered.fp"
    tampered.write_bytes(fp.read_bytes()[:-10])
    broken = cli("verify", str(tampered), src)
    assert broken.returncode == 2 and "not a readable" in broken.stderr


def test_verify_combines_evidence_files(zoo_cache, tmp_path):
    # two schemes of one owner, one verdict (Holm: valid however they depend): a fine-tuned copy is related, an
    # independent model is not, and a seal, which has no p-value, is refused
    cache, src = ["--cache", str(zoo_cache)], "train(cnn,digits,0)"
    nulls = [x for a in ("lenet", "mlp") for s in (4, 5) for x in ("--null", f"train({a},digits,{s})")]
    both = ["verify"]
    for scheme in ("AKH", "SAC-w"):
        fp = tmp_path / f"{scheme}.fp"
        made = runner.invoke(app, ["extract", src, "--scheme", scheme, "--budget", "40", "-o", str(fp), *cache])
        assert made.exit_code == 0, made.output
        assert runner.invoke(app, ["calibrate", str(fp), *nulls, "--fpr", "0.05", *cache]).exit_code == 0
        both += [str(fp)] if len(both) == 1 else ["--and", str(fp)]
    related = runner.invoke(app, [*both, f"{src}->finetune(1)", "--json", *cache])
    assert related.exit_code == 0 and "holm over 2 schemes" in related.output, related.output
    unrelated = cli(*both, "train(mlp,digits,3)", "--json", *cache)
    assert unrelated.returncode == 1 and '"queries": 80' in unrelated.stdout, unrelated.stdout
    bad = cli(*both, src, "--combine", "average", *cache)
    assert bad.returncode == 2 and "unknown --combine" in bad.stderr
    seal = tmp_path / "owner.seal"
    assert runner.invoke(app, ["integrity", "seal", src, "-o", str(seal), *cache]).exit_code == 0
    refused = cli(*both, "--and", str(seal), src, *cache)
    assert refused.returncode == 2 and "deterministic" in refused.stderr, refused.stderr


def test_bench_runs_every_named_scheme_by_default():
    from modelprint.cli import BLACK_BOX_SCHEMES
    from modelprint.fingerprint import NAMED

    assert sorted(BLACK_BOX_SCHEMES) == sorted(NAMED)  # the CLI's literal copy, kept so that it starts without torch


def test_schemes_lists_named_schemes_and_components():
    result = runner.invoke(app, ["schemes"])
    assert result.exit_code == 0
    for word in (
        "AKH",
        "ZestOfLIME",
        "conferrable",
        "mutual-info",
        "hard labels",
        "probs",
        "MetaV",
        "white-box",
        "deepjudge",
    ):
        assert word in result.output


def test_bench_run_and_report(zoo_cache, tmp_path):
    listing = tmp_path / "mine.yaml"
    listing.write_text(
        "dataset: digits\nmodels:\n"
        "  - {model: 'train(cnn,digits,0)', source: owner, task: source}\n"
        "  - {model: 'train(cnn,digits,0)->finetune(1)', source: owner, task: finetune}\n"
        "  - {model: 'train(mlp,digits,3)'}\n  - {model: 'train(lenet,digits,3)'}\n"
    )
    out = tmp_path / "run"
    cache = ["--cache", str(zoo_cache)]
    ran = runner.invoke(
        app, ["bench", "run", f"custom:{listing}", "--schemes", "AKH,Random", "--budgets", "10", "-o", str(out), *cache]
    )
    assert ran.exit_code == 0 and "finetune" in ran.output and "scored pairs" in ran.output, ran.output
    report = runner.invoke(app, ["bench", "report", str(out)])
    assert report.exit_code == 0 and (out / "report.html").exists(), report.output
    listed = runner.invoke(app, ["bench", "list"])
    assert listed.exit_code == 0 and "mnist1d-sac" in listed.output


def test_compare_checkpoints(zoo_cache):
    cache = ["--cache", str(zoo_cache)]
    nulls = [x for s in range(4, 10) if s != 7 for x in ("--null", f"train(mlp,digits,{s})")]
    owner = "train(mlp,digits,3)"
    same = runner.invoke(app, ["compare", owner, f"{owner}->permute(1)->rescale(1)->finetune(0)", *nulls, *cache])
    assert same.exit_code == 0 and "RELATED" in same.output, same.output
    other = runner.invoke(app, ["compare", owner, "train(mlp,digits,7)", *nulls, "--json", *cache])
    assert other.exit_code == 1 and '"related": false' in other.output, other.output


def test_weights_fingerprint_through_the_cli(zoo_cache, tmp_path):
    fp, cache = tmp_path / "owner.wfp", ["--cache", str(zoo_cache)]
    owner = "train(mlp,digits,3)"
    made = runner.invoke(app, ["extract", owner, "--scheme", "weights", "-o", str(fp), *cache])
    assert made.exit_code == 0 and "weights of a mlp" in made.output, made.output
    nulls = [x for s in range(4, 10) if s != 7 for x in ("--null", f"train(mlp,digits,{s})")]
    assert runner.invoke(app, ["calibrate", str(fp), *nulls, "--fpr", "0.01", *cache]).exit_code == 0
    v = runner.invoke(app, ["verify", str(fp), f"{owner}->permute(1)->rescale(1)->finetune(0)", "--json", *cache])
    assert v.exit_code == 0 and '"scheme": "weights"' in v.output, v.output


def test_watermark_embed_and_verify(zoo_cache, tmp_path):
    cache = ["--cache", str(zoo_cache)]
    out, key = tmp_path / "marked", tmp_path / "owner.key"
    made = runner.invoke(
        app,
        [
            "watermark",
            "embed",
            "train(mlp,digits,3)",
            "-o",
            str(out),
            "--key",
            str(key),
            "--scheme",
            "trigger-set(size=30)",
            "--epochs",
            "8",
            *cache,
        ],
    )
    assert made.exit_code == 0 and key.exists(), made.output
    yes = runner.invoke(app, ["watermark", "verify", str(key), str(out), "--json"])
    assert yes.exit_code == 0 and '"related": true' in yes.output, yes.output
    no = runner.invoke(app, ["watermark", "verify", str(key), "train(lenet,digits,3)", *cache])
    assert no.exit_code == 1, no.output


def test_watermark_bench_prints_the_outcome_table_and_writes_the_report(zoo_cache, tmp_path):
    args = [
        "watermark",
        "bench",
        "-o",
        str(tmp_path),
        "--source",
        "train(mlp,digits,3)",
        "--schemes",
        "uchida(bits=32)",
    ]
    r = runner.invoke(app, [*args, "--attacks", "permute,quantize", "--epochs", "4", "--cache", str(zoo_cache)])
    assert r.exit_code == 0, r.output
    assert "REMOVED" in r.output and "kept" in r.output and (tmp_path / "report.html").exists()
    bad = runner.invoke(app, [*args, "--attacks", "nosuch"])
    assert isinstance(bad.exception, ConfigError) and "unknown attack nosuch" in str(bad.exception)


def test_help_loads_neither_torch_nor_the_library():
    """--help and usage errors answer without importing torch (what made every command start slowly)."""
    code = "import sys, modelprint.cli; print([m for m in ('torch', 'modelprint.fingerprint') if m in sys.modules])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
    assert cli("--help").returncode == 0 and "zoo" in cli("--help").stdout
