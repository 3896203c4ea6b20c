"""Build a zoo of 60+ models (2 digits sources, every lineage operation, several seeds, independent models of
4 architectures), cold then warm, and print per-operation median build time, totals and accuracy checks.

    python benchmarks/zoo.py [--cache DIR] [--device cpu|cuda]

Targets (issue 2): cold < 6 min on 2 cores, warm < 10 s; trained cnn/lenet/resnet-tiny >= 97% on digits,
cnn1d >= 90% on mnist1d; extractions within 5 points of their parent.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict

import torch
from rich.console import Console
from rich.table import Table

from modelprint.lineage import build_node, parse

SOURCES = ["train(cnn,digits,0)", "train(resnet-tiny,digits,0)"]
DERIVED = [
    "finetune(0)", "finetune(1)", "transfer(digits-parity,0)", "transfer(digits-c,0)",
    "prune(0.2)", "prune(0.5)", "prune(0.8)", "prune(0.5,structured=true)", "fineprune(0)",
    "quantize(fp16)", "quantize(int8)", "distill(lenet,0)", "distill(mlp,0)",
    "label_extract(lenet,0)", "label_extract(mlp,0)", "label_extract(cnn,1)", "adv_label_extract(lenet,0)",
    "permute(0)", "rescale(0)", "permute(1)->rescale(1)->finetune(0)", "noise(0.05,0)",
]  # fmt: skip
INDEPENDENT = [f"train({a},digits,{s})" for a in ("cnn", "lenet", "resnet-tiny", "mlp") for s in (1, 2, 3, 4)]
INDEPENDENT += ["train(cnn,digits-parity,0)", "train(lenet,digits-parity,0)", "train(cnn1d,mnist1d,0)"]
TARGETS = {("cnn", "digits"): 0.97, ("lenet", "digits"): 0.97, ("resnet-tiny", "digits"): 0.97,
           ("cnn1d", "mnist1d"): 0.90}  # fmt: skip


def zoo() -> list[str]:
    return SOURCES + [f"{s}->{d}" for s in SOURCES for d in DERIVED] + INDEPENDENT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", help="zoo cache folder (default: a fresh temporary folder, i.e. a cold cache)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(2)
    console = Console()
    exprs = zoo()
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or tmp
        built, per_op = {}, defaultdict(list)
        t0 = time.perf_counter()
        for i, e in enumerate(exprs, 1):
            b = build_node(e, cache_dir=cache, device=args.device)
            built[e] = b
            if not b.cached:
                per_op[parse(e)[-1].name].append(b.seconds)
            console.print(f"[{i}/{len(exprs)}] {b.test_accuracy:.3f} {b.seconds:5.1f}s {e}", highlight=False)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        for e in exprs:
            assert build_node(e, cache_dir=cache, device=args.device).cached
        warm = time.perf_counter() - t0

    table = Table(title=f"zoo build times ({len(exprs)} models, {torch.get_num_threads()} threads)")
    for col in ("operation", "models", "median s", "total s"):
        table.add_column(col, justify="right" if col != "operation" else "left")
    for op, times in sorted(per_op.items()):
        table.add_row(op, str(len(times)), f"{statistics.median(times):.2f}", f"{sum(times):.1f}")
    table.add_row("[bold]all (cold cache)", str(len(exprs)), "", f"[bold]{cold:.1f}")
    table.add_row("[bold]all (warm cache)", str(len(exprs)), "", f"[bold]{warm:.1f}")
    console.print(table)

    checks = Table(title="accuracy checks")
    for col in ("model", "test acc", "target", "ok"):
        checks.add_column(col)
    failures = 0
    for e, b in built.items():
        ops = parse(e)
        first = ops[0]
        if len(ops) == 1 and (first.arch, first.dataset) in TARGETS:
            target = TARGETS[(first.arch, first.dataset)]
        elif ops[-1].name in ("distill", "label_extract", "adv_label_extract"):
            target = built[e.rsplit("->", 1)[0]].test_accuracy - 0.05
        else:
            continue
        ok = b.test_accuracy >= target
        failures += not ok
        checks.add_row(e, f"{b.test_accuracy:.3f}", f">= {target:.3f}", "yes" if ok else "[red]NO")
    console.print(checks)
    console.print(
        f"cold {cold:.1f} s (target < 360), warm {warm:.1f} s (target < 10), accuracy checks failed: {failures}"
    )


if __name__ == "__main__":
    main()
