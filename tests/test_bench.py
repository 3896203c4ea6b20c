"""Benchmarks: metrics on hand-made tables, benchmark definitions, a resumable runner whose executors agree,
and the report."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from rich.console import Console

from modelprint import bench
from modelprint.bench.metrics import TRIVIAL_TASKS, headline, min_negatives, per_source, summarize
from modelprint.cli import summary_table
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
    assert out.loc["copy", "tpr@0"] == 0.5
    # steal: its positive ties with the best negative: half credit for that pair, and no TPR at FPR 0
    assert out.loc["steal", "auc"] == pytest.approx((3 + 0.5) / 4)
    assert out.loc["steal", "tpr@0"] == 0.0
    # 4 negatives cannot resolve 1% or 5% FPR (these used to equal tpr@0: 0.5 and 0.0): undefined now
    assert out[["tpr@0.01", "tpr@0.05"]].isna().all().all()
    assert out.loc["copy", "negatives"] == 4 and out.loc["copy", "sources"] == 1


def negatives(n: int, source: str = "s", top: float = 0.5) -> list[tuple]:
    """``n`` negatives of ``source`` scoring evenly from 0 up to ``top``."""
    return [(source, f"n{i}", "", False, top * i / max(n - 1, 1)) for i in range(n)]


def test_tpr_at_a_rate_needs_one_over_the_rate_negatives():
    for n in range(1, 1001):  # 1 / (1/49) is 49.00000000000001 in floating point: still 49
        assert min_negatives(1 / n) == n
    assert min_negatives(0.01) == 100 and min_negatives(0.05) == 20 and min_negatives(0.03) == 34
    pos = [("s", "p1", "t", True, 0.9), ("s", "p2", "t", True, 0.48)]
    few = summarize(table(pos + negatives(20))).iloc[0]
    assert math.isnan(few["tpr@0.01"]) and few["tpr@0.05"] == 1.0  # 1 of 20 negatives (0.5) is above 0.48
    enough = summarize(table(pos + negatives(100))).iloc[0]
    assert enough["tpr@0.01"] == 0.5 and enough["tpr@0.05"] == 1.0  # 4 of 100 negatives are above 0.48
    assert few["tpr@0"] == enough["tpr@0"] == 0.5
    with pytest.raises(ConfigError, match="false-positive rates"):
        per_source(table(pos + negatives(20)), fprs=(0.0,))


def test_summarize_averages_tpr_over_the_sources_where_it_is_defined():
    rows = [("a", "p", "t", True, 0.9), *negatives(100, "a")]  # a resolves 1%: TPR 1
    rows += [("b", "p", "t", True, 0.1), *negatives(20, "b")]  # b does not: its TPR (0) is no part of the mean
    rows += [("s", "p", "u", True, 0.9), *negatives(20, "s")]  # task u: no source resolves 1%
    ps = per_source(table(rows)).set_index(["source", "task"])
    assert ps.loc[("a", "t"), "tpr@0.01"] == 1.0 and math.isnan(ps.loc[("b", "t"), "tpr@0.01"])
    out = summarize(table(rows)).set_index("task")
    assert out.loc["t", "tpr@0.01"] == 1.0 and out.loc["t", "tpr@0"] == 0.5 and out.loc["t", "sources"] == 2
    assert math.isnan(out.loc["u", "tpr@0.01"]) and out.loc["u", "tpr@0.05"] == 1.0


def test_tpr_at_zero_false_positives_counts_ties_as_misses():
    rows = [
        ("s", "p1", "t", True, 0.8),
        ("s", "p2", "t", True, 0.7),  # ties with the best negative: not above every negative
        ("s", "p3", "t", True, 0.7),
        ("s", "p4", "t", True, 0.2),
        ("s", "n1", "", False, 0.7),
        ("s", "n2", "", False, 0.7),
        ("s", "n3", "", False, 0.1),
        ("s", "m", "other", False, 0.95),  # a negative for another task only: does not count here
    ]
    assert summarize(table(rows)).iloc[0]["tpr@0"] == 0.25
    failed = ("s", "n", "", False, float("nan"))  # a failed comparison ranks below any positive
    assert summarize(table([*rows[:4], failed])).iloc[0]["tpr@0"] == 1.0


def test_headline_leaves_trivial_tasks_out():
    assert {"same", "permute", "rescale", "permute/rescale"} <= TRIVIAL_TASKS
    assert TRIVIAL_TASKS.isdisjoint(bench.load("digits-sac").tasks()[1:-1])  # only same and permute/rescale
    rows = [("s", "owner", "same", True, 0.9), ("s", "sym", "permute/rescale", True, 0.9)]
    rows += [("s", "ft", "finetune", True, 0.6), ("s", "st", "steal", True, 0.2), *negatives(20)]
    summary = summarize(table(rows, scheme="X", budget=10))
    assert set(summary["task"]) == {"same", "permute/rescale", "finetune", "steal"}  # still rows of the table
    head = headline(summary).iloc[0]
    assert head["tasks"] == 2 and head["auc"] == pytest.approx((1.0 + 0.4) / 2)  # finetune and steal only
    assert head["tpr@0"] == 0.5 and head["tpr@0.05"] == 0.5 and math.isnan(head["tpr@0.01"])
    console = Console(width=200, record=True)
    console.print(summary_table(summary, "t"))
    text = " ".join(console.export_text().split())  # the caption wraps
    assert "1.00/1.00/n/a" in text and "0.70/0.50/n/a" in text  # same; the mean row
    assert "trivial tasks (permute/rescale, same) are listed but not averaged" in text


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
    assert len(shared) >= min_negatives(0.01) and len(set(shared)) == len(shared)  # TPR@1% is defined
    assert any(t.task == "transfer" and "parity" in t.model for t in full.negatives)
    demo = bench.load("mnist1d-sac", "demo")
    assert demo.dataset == "mnist1d" and len(demo.models()) < len(bench.load("mnist1d-sac").models())
    assert len(demo.negatives) == 9 and len(demo.models()) == 19  # the demo costs what it did
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
    assert "tpr@0" in summary and "n/a" in html and "Headline" in html  # 2-3 negatives cannot resolve 1% FPR
    with pytest.raises(ConfigError, match="no results"):
        report.write(tmp_path / "empty")
