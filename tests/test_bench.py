"""Benchmarks: metrics on hand-made tables, benchmark definitions, a resumable runner whose executors agree,
and the report."""

from __future__ import annotations

import pandas as pd
import pytest

from modelprint import bench
from modelprint.bench.metrics import per_source, summarize
from modelprint.errors import ConfigError

from .conftest import SOURCE


def table(rows, **extra):
    df = pd.DataFrame(rows, columns=["source", "target", "task", "related", "score"])
    for k, v in extra.items():
        df[k] = v
    return df


def test_summarize_known_values_with_ties():
    rows = [
        ("s", "p1", "copy", True, 0.9),
        ("s", "p2", "copy", True, 0.4),
        ("s", "q1", "steal", True, 0.5),
        ("s", "n1", "", False, 0.5),
        ("s", "n2", "", False, 0.3),
        ("s", "n3", "", False, 0.1),
        ("s", "n4", "", False, 0.0),
    ]
    out = summarize(table(rows)).set_index("task")
    # copy: positives 0.9 and 0.4 against 4 negatives: 7 of 8 pairs ordered right; at FPR 0 half the positives
    assert out.loc["copy", "auc"] == pytest.approx(0.875)
    assert out.loc["copy", "tpr@0.01"] == 0.5 and out.loc["copy", "tpr@0.05"] == 0.5
    # steal: its positive ties with the best negative: half credit for that pair, and no TPR at FPR 0
    assert out.loc["steal", "auc"] == pytest.approx((3 + 0.5) / 4)
    assert out.loc["steal", "tpr@0.01"] == 0.0
    assert out.loc["copy", "negatives"] == 4 and out.loc["copy", "sources"] == 1


def test_summarize_averages_sources_then_seeds_and_skips_sources_without_negatives():
    rows = []
    for seed, bad in ((0, 0.0), (1, 0.95)):
        rows += [("a", "p", "t", True, 0.9, seed), ("a", "n1", "", False, 0.5, seed), ("a", "n2", "", False, bad, seed)]
        rows += [("b", "p", "t", True, 0.9, seed)]  # source b has no negatives: no ROC, skipped
    df = pd.DataFrame(rows, columns=["source", "target", "task", "related", "score", "seed"])
    out = summarize(df)
    assert len(out) == 1 and out["sources"].iloc[0] == 1 and out["seeds"].iloc[0] == 2
    assert out["auc"].iloc[0] == pytest.approx((1.0 + 0.5) / 2)
    assert out["auc_std"].iloc[0] == pytest.approx(0.25)
    assert set(per_source(df)["source"]) == {"a"}


def test_task_specific_negatives_count_for_their_task_only():
    rows = [
        ("s", "p", "transfer", True, 0.6),
        ("s", "q", "finetune", True, 0.6),
        ("s", "n", "", False, 0.1),
        ("s", "m", "transfer", False, 0.9),  # trained on the transfer data
    ]
    out = summarize(table(rows, scheme="X", budget=10)).set_index("task")
    assert out.loc["finetune", "auc"] == 1.0 and out.loc["transfer", "auc"] == 0.5
    assert out.loc["transfer", "negatives"] == 2 and out.loc["finetune", "negatives"] == 1


def test_summarize_reads_external_tables_and_rejects_bad_ones():
    df = table([("s", "p", "t", "true", 0.9), ("s", "n", None, "0", 0.1)])
    assert summarize(df)["auc"].iloc[0] == 1.0
    with pytest.raises(ConfigError, match="lacks column"):
        summarize(df.drop(columns="score"))
    with pytest.raises(ConfigError, match="cannot read 'maybe'"):
        summarize(table([("s", "p", "t", "maybe", 0.9)]))


def test_sac_benchmarks_follow_the_protocol():
    full = bench.load("digits-sac", "full")
    assert len(full.sources) == 2 and len({s.split("(")[1].split(",")[0] for s in full.sources}) == 2
    assert set(full.tasks()) >= {
        "same",
        "finetune",
        "transfer",
        "prune",
        "fineprune",
        "quantize",
        "probit extraction",
        "label extraction",
        "adv label extraction",
        "permute/rescale",
    }
    for src in full.sources:
        arch = src.split("(")[1].split(",")[0]
        steals = [t.model for t in full.positives[src] if t.task == "label extraction"]
        archs = {m.split("label_extract(")[1].split(",")[0] for m in steals}
        assert len(archs) >= 3 and arch not in archs  # extractions into other architectures
    shared = [t for t in full.negatives if t.task == ""]
    assert len({t.model.split("(")[1].split(",")[0] for t in shared}) >= 4
    assert any(t.task == "transfer" and "parity" in t.model for t in full.negatives)
    demo = bench.load("mnist1d-sac", "demo")
    assert demo.dataset == "mnist1d" and len(demo.models()) < len(bench.load("mnist1d-sac").models())
    with pytest.raises(ConfigError, match="unknown benchmark"):
        bench.load("cifar-sac")


@pytest.fixture()
def tiny(tmp_path):
    """A custom benchmark (CSV) over zoo models: one source, a derived model, shared and task negatives."""
    path = tmp_path / "tiny.csv"
    path.write_text(
        "model,source,task,dataset\n"
        f'"{SOURCE}",owner,source,digits\n'
        f'"{SOURCE}->finetune(1)",owner,finetune,\n'
        f'"{SOURCE}->label_extract(lenet,0)",owner,label extraction,\n'
        '"train(mlp,digits,3)",,,\n'
        '"train(lenet,digits,3)",,,\n'
        '"train(lenet,digits,4)",,label extraction,\n'
    )
    return bench.load(f"custom:{path}")


def test_custom_benchmark_files(tiny, tmp_path):
    assert tiny.sources == (SOURCE,) and tiny.dataset == "digits"
    assert [t.task for t in tiny.positives[SOURCE]] == ["finetune", "label extraction"]
    assert [t.task for t in tiny.negatives] == ["", "", "label extraction"]
    yml = tmp_path / "b.yaml"
    yml.write_text(
        f"dataset: digits\nmodels:\n  - {{model: '{SOURCE}', source: o, task: source}}\n"
        "  - {model: m/derived, source: o, task: finetune}\n  - {model: 'train(mlp,digits,3)'}\n"
    )
    b = bench.load(f"custom:{yml}")
    assert b.resolve_path("m/derived") == str(tmp_path / "m/derived") and b.resolve_path(SOURCE) == SOURCE
    bad = tmp_path / "bad.csv"
    bad.write_text("model,source,task\nx,nobody,finetune\ny,,\n")
    with pytest.raises(ConfigError, match="names source 'nobody'"):
        bench.load(f"custom:{bad}")


def stable(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["score_s", "load_s", "extract_s"]).reset_index(drop=True)


SCHEMES, BUDGETS = ["AKH", "Random"], [10, 20]


def test_runner_resumes_and_executors_agree(tiny, tmp_path, zoo_cache):
    full = bench.run(tiny, SCHEMES, BUDGETS, [0], tmp_path / "full", cache_dir=zoo_cache)
    assert len(full) == 2 * 2 * 5 and set(full["scheme"]) == set(SCHEMES)

    class Killed(Exception):
        pass

    def kill_after_two(what, i, n):
        if what != "building models" and i == 2:
            raise Killed

    with pytest.raises(Killed):
        bench.run(tiny, SCHEMES, BUDGETS, [0], tmp_path / "resumed", cache_dir=zoo_cache, progress=kill_after_two)
    assert len(list((tmp_path / "resumed" / "scores").glob("*.parquet"))) == 2
    scored = []
    resumed = bench.run(
        tiny,
        SCHEMES,
        BUDGETS,
        [0],
        tmp_path / "resumed",
        cache_dir=zoo_cache,
        progress=lambda what, i, n: scored.append(what) if what != "building models" else None,
    )
    assert len(scored) == 2  # only the two units the killed run had not finished
    pd.testing.assert_frame_equal(stable(full), stable(resumed))

    procs = bench.run(tiny, SCHEMES, BUDGETS, [0], tmp_path / "procs", workers=2, cache_dir=zoo_cache)
    pd.testing.assert_frame_equal(stable(full), stable(procs))


def test_ray_executor_gives_the_same_scores(tiny, tmp_path, zoo_cache):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'modelprint[ray]')")
    try:
        with_ray = bench.run(
            tiny, SCHEMES, BUDGETS[:1], [0], tmp_path / "ray", executor="ray", workers=2, cache_dir=zoo_cache
        )
    finally:
        ray.shutdown()
    local = bench.run(tiny, SCHEMES, BUDGETS[:1], [0], tmp_path / "local", cache_dir=zoo_cache)
    pd.testing.assert_frame_equal(stable(local), stable(with_ray))


def test_report_has_every_section(tiny, tmp_path, zoo_cache):
    from modelprint.bench import report

    bench.run(tiny, SCHEMES, BUDGETS, [0], tmp_path / "r", cache_dir=zoo_cache)
    path, summary = report.write(tmp_path / "r")
    html = path.read_text()
    for section in report.SECTIONS:
        assert f'id="{section}"' in html
    assert html.count("data:image/png;base64,") >= 4 and "label extraction" in html and "torch" in html
    assert set(summary["task"]) == {"finetune", "label extraction"}
    with pytest.raises(ConfigError, match="no results"):
        report.write(tmp_path / "empty")
