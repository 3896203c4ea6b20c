"""Watermarks: accuracy and time cost of embedding each scheme (over key seeds and architectures), then the
robustness table (every scheme x every attack, WRT rule) for each source.

    python benchmarks/watermarks.py [--sources "train(cnn,digits,0)" "train(mlp,digits,0)"] [--out runs/wm]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from modelprint import data
from modelprint import watermark as wm
from modelprint.lineage import build_node
from modelprint.lineage.train import accuracy
from modelprint.watermark import bench


def embedding_cost(sources: list[str], seeds: range) -> pd.DataFrame:
    test = data.load("digits", "test")
    rows = []
    for expr in sources:
        owner = build_node(expr)
        for spec in bench.SCHEMES:
            for seed in seeds:
                t0 = time.perf_counter()
                marked, _ = wm.embed(owner.module, spec, owner.dataset, key_seed=seed)
                seconds, cost = time.perf_counter() - t0, owner.test_accuracy - accuracy(marked, test.x, test.y)
                rows.append({"source": expr, "scheme": spec, "seed": seed, "seconds": seconds,
                             "train_seconds": owner.meta["seconds"], "cost_points": 100 * cost})  # fmt: skip
    df = pd.DataFrame(rows)
    return df.groupby(["source", "scheme"], sort=False).agg(
        embed_s=("seconds", "median"),
        train_s=("train_seconds", "first"),
        cost_mean=("cost_points", "mean"),
        cost_max=("cost_points", "max"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sources", nargs="+", default=["train(cnn,digits,0)", "train(mlp,digits,0)"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="runs/watermarks")
    args = parser.parse_args()
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", None)
    print(embedding_cost(args.sources, range(args.seeds)).round(2).to_string())
    for i, expr in enumerate(args.sources):
        out = Path(args.out) / f"source{i}"
        results, _ = bench.run(out, expr)
        attacks = results[results["kind"] == "attack"]
        cell = attacks["evidence"].map("{:.2f}".format) + attacks["detected"].map({True: " kept", False: ""})
        cell = cell.where(attacks["detected"], cell + attacks["succeeded"].map({True: " REMOVED", False: " broken"}))
        table = attacks.assign(cell=cell).pivot(index="scheme", columns="attack", values="cell")
        print(f"\n{expr}\n{table.loc[list(dict.fromkeys(attacks['scheme'])), list(dict.fromkeys(attacks['attack']))]}")
        print(f"report: {bench.report(out)}")


if __name__ == "__main__":
    main()
