"""Fingerprint schemes on the digits zoo: time to extract and verify at budget 100 (against the floor of the
suspect's forward passes alone), and AUC / TPR@1%FPR / TPR@5%FPR per scheme and task (QuRD's protocol:
per source, positives of a task vs the independent models, averaged over sources).

    python benchmarks/fingerprints.py [--cache DIR] [--budget 100] [--schemes AKH,CAE,...] [--seeds 0]

Targets (issue 3): verification within 2x of the forward-pass floor; some scheme or combination with
TPR@1%FPR >= 0.9 on every task, label extraction included (QuRD's best: TPR@5%FPR 0.46-0.59 at 100 queries).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from sklearn.metrics import roc_auc_score, roc_curve

import modelprint as mp
from modelprint.access import WhiteBox
from modelprint.decide import combine
from modelprint.errors import AccessError
from modelprint.fingerprint import NAMED
from modelprint.lineage import build_node

SOURCES = ["train(cnn,digits,0)", "train(resnet-tiny,digits,0)"]
TASKS = {
    "same": ["permute(0)", "rescale(0)"],
    "finetune": ["finetune(0)", "finetune(1)", "permute(1)->rescale(1)->finetune(0)"],
    "noise": ["noise(0.05,0)"],
    "prune": ["prune(0.2)", "prune(0.5)", "prune(0.8)", "prune(0.5,structured=true)"],
    "fineprune": ["fineprune(0)", "fineprune(1)"],
    "quantize": ["quantize(fp16)", "quantize(int8)"],
    "transfer": ["transfer(digits-parity,0)", "transfer(digits-c,0)"],
    "probit extraction": ["distill(lenet,0)", "distill(mlp,0)"],
    "label extraction": ["label_extract(lenet,0)", "label_extract(mlp,0)", "label_extract(cnn,1)"],
    "adv label extraction": ["adv_label_extract(lenet,0)", "adv_label_extract(mlp,0)"],
}
INDEPENDENT = [f"train({a},digits,{s})" for a in ("cnn", "lenet", "resnet-tiny", "mlp") for s in (1, 2, 3, 4)]
TRANSFER_NEGATIVES = [f"train({a},{d},0)" for a in ("cnn", "lenet") for d in ("digits-parity", "digits-c")]
FUSED = [(("AKH", "Divergent"), "bonferroni"), (("AKH", "CAE", "Divergent"), "fisher")]
CALIBRATION = [f"train({a},digits,{s})" for a in ("cnn", "lenet", "resnet-tiny", "mlp") for s in (5, 6)]
MAX_DROP = 0.2  # a derived model that lost more accuracy than this is a failed attack, not a stolen model


def tpr_at(y: np.ndarray, s: np.ndarray, fpr: float) -> float:
    """TPR at the largest ROC point with FPR <= fpr."""
    f, t, _ = roc_curve(y, s)
    return float(t[f <= fpr + 1e-12].max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", help="zoo cache folder (default: a fresh temporary folder)")
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--schemes", default=",".join(NAMED))
    parser.add_argument("--seeds", default="0", help="query seeds, comma-separated")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(2)
    console = Console(width=260)
    schemes = args.schemes.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or tmp

        def get(expr: str):
            return build_node(expr, cache_dir=cache, device=args.device)

        t0 = time.perf_counter()
        models = {e: get(e) for e in INDEPENDENT + TRANSFER_NEGATIVES + CALIBRATION}
        positives: dict[str, list[tuple[str, str]]] = defaultdict(list)  # source -> [(task, expr)]
        dropped = []
        for src in SOURCES:
            models[src] = get(src)
            for task, steps in TASKS.items():
                for step in steps:
                    e = f"{src}->{step}"
                    models[e] = get(e)
                    same_task = models[e].dataset == "digits"
                    if same_task and models[e].test_accuracy < models[src].test_accuracy - MAX_DROP:
                        dropped.append(f"{e} ({models[e].test_accuracy:.2f})")
                        continue
                    positives[src].append((task, e))
        console.print(f"zoo ready: {len(models)} models in {time.perf_counter() - t0:.0f}s")

        scores: dict = {}  # (scheme, seed, source, suspect) -> score
        pvals: dict = {}
        extract_s, verify_s, floor_s = defaultdict(list), defaultdict(list), defaultdict(list)
        sequential = defaultdict(list)  # scheme -> [(queries spent, same decision as the full budget)]
        for name in schemes:
            for seed in seeds:
                for src in SOURCES:
                    owner = models[src].module
                    t = time.perf_counter()
                    fp = mp.extract(owner, name, "digits", args.budget, seed, cache_dir=cache, device=args.device)
                    extract_s[name].append(time.perf_counter() - t)
                    fp = mp.calibrate(fp, [models[e].module for e in CALIBRATION], device=args.device)
                    suspects = [e for _, e in positives[src]] + INDEPENDENT + TRANSFER_NEGATIVES
                    for e in suspects:
                        model = WhiteBox(models[e].module, device=args.device)
                        q = fp.queries.to(args.device, next(models[e].module.parameters()).dtype)
                        with torch.no_grad():  # the floor: the suspect's forward passes on the queries, alone
                            t = time.perf_counter()
                            models[e].module(q)
                            floor_s[name].append(time.perf_counter() - t)
                        t = time.perf_counter()
                        try:
                            v = mp.verify(fp, model, device=args.device)
                        except AccessError:  # e.g. a per-class scheme on a transfer to 2 classes: undetected
                            scores[name, seed, src, e], pvals[name, seed, src, e] = -1e9, 1.0
                            continue
                        verify_s[name].append(time.perf_counter() - t)
                        scores[name, seed, src, e], pvals[name, seed, src, e] = v.score, v.p_value
                        if fp.scheme.sequential:
                            seq = mp.verify(fp, model, sequential=True, device=args.device)
                            sequential[name].append((seq.queries, seq.related == v.related))
                console.print(f"{name} seed {seed}: extract {statistics.median(extract_s[name]):.2f}s", highlight=False)

    for parts, method in FUSED:  # one verdict from several calibrated fingerprints (mp.verify_combined)
        if all(n in schemes for n in parts):
            name = f"{'+'.join(parts)} ({method})"
            for key in [k for k in pvals if k[0] == parts[0]]:
                scores[(name, *key[1:])] = -np.log10(combine([pvals[(n, *key[1:])] for n in parts], method))
            schemes = [*schemes, name]

    timing = Table(title=f"time per fingerprint at budget {args.budget} (2 sources x {len(seeds)} seeds)")
    for col in ("scheme", "extract s", "verify ms", "floor ms", "verify / floor"):
        timing.add_column(col, justify="right" if col != "scheme" else "left")
    for name in schemes:
        if name in verify_s:
            ver, floor = statistics.median(verify_s[name]), statistics.median(floor_s[name])
            timing.add_row(name, f"{statistics.median(extract_s[name]):.2f}", f"{1e3 * ver:.2f}",
                           f"{1e3 * floor:.2f}", f"{ver / floor:.2f}")  # fmt: skip
    console.print(timing)
    if sequential:
        seq = Table(title=f"sequential verification (batches of 10, delta 0.01) vs the full {args.budget} queries")
        for col in ("scheme", "mean queries", "saved", "same decision"):
            seq.add_column(col, justify="right" if col != "scheme" else "left")
        for name, runs in sequential.items():
            q = np.mean([r[0] for r in runs])
            seq.add_row(name, f"{q:.1f}", f"{1 - q / args.budget:.0%}", f"{np.mean([r[1] for r in runs]):.1%}")
        console.print(seq)

    metrics = Table(title=f"AUC / TPR@1%FPR / TPR@5%FPR at budget {args.budget} (mean over sources and seeds)")
    metrics.add_column("task")
    for name in schemes:
        metrics.add_column(name, justify="right")
    for task in TASKS:
        cells = []
        for name in schemes:
            aucs, t1, t5 = [], [], []
            for seed in seeds:
                for src in SOURCES:
                    pos = [e for t, e in positives[src] if t == task]
                    neg = INDEPENDENT + (TRANSFER_NEGATIVES if task == "transfer" else [])
                    if not pos:
                        continue
                    y = np.array([1] * len(pos) + [0] * len(neg))
                    s = np.array([scores[name, seed, src, e] for e in pos + neg])
                    aucs.append(roc_auc_score(y, s))
                    t1.append(tpr_at(y, s, 0.01))
                    t5.append(tpr_at(y, s, 0.05))
            cells.append(f"{np.mean(aucs):.2f} / {np.mean(t1):.2f} / {np.mean(t5):.2f}" if aucs else "—")
        metrics.add_row(task, *cells)
    console.print(metrics)
    if dropped:
        console.print("left out (accuracy fell by more than 20 points: a failed attack): " + ", ".join(dropped))


if __name__ == "__main__":
    main()
