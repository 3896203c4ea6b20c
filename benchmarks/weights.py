"""White-box comparisons on the digits zoo: AUC and TPR@1%FPR per task for naive weight cosine (to show the
problem), matching agreement (calibrated p-values), CKA and the invariant signature; a KS statistic of the
calibrated p-values of independent models; time per comparison.

    python benchmarks/weights.py [--cache DIR]

Targets (issue 5): TPR@1%FPR = 1.0 on every same-architecture task, permute∘rescale∘finetune included, with
independent models' p-values uniform.
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
from scipy.stats import kstest
from sklearn.metrics import roc_auc_score

from modelprint import data
from modelprint.bench.metrics import tpr_at
from modelprint.decide import EmpiricalNull
from modelprint.fingerprint.cka import cka_score
from modelprint.fingerprint.matching import matching_agreement
from modelprint.fingerprint.signature import signature, signature_similarity
from modelprint.fingerprint.weights import default_nulls
from modelprint.lineage import build

ARCHS = ("mlp", "cnn", "resnet-tiny")
TASKS = {
    "finetune": "finetune(1)",
    "prune": "prune(0.5)",
    "quantize": "quantize(int8)",
    "permute": "permute(0)",
    "rescale": "rescale(0)",
    "permute∘finetune": "permute(1)->finetune(0)",
    "permute∘rescale∘finetune": "permute(1)->rescale(1)->finetune(0)",
    "noise": "noise(0.05,0)",
}
INDEPENDENT_SEEDS = range(1, 9)


def naive_cosine(a, b) -> float:
    va = torch.cat([p.detach().float().flatten() for p in a.parameters()])
    vb = torch.cat([p.detach().float().flatten() for p in b.parameters()])
    return float(torch.nn.functional.cosine_similarity(va, vb, dim=0))


def comparisons(src, sig, x, shape) -> dict:
    """Each method's similarity of a model to ``src`` (higher = more related)."""
    return {
        "naive cosine": lambda m: naive_cosine(src, m),
        "matching agreement": lambda m: matching_agreement(src, m, shape)[0],
        "CKA": lambda m: cka_score(src, m, x),
        "signature": lambda m: signature_similarity(sig, signature(m, shape)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", help="zoo cache folder (default: a fresh temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    console = Console(width=200)
    x = data.load("digits", "test").x[:256]
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or tmp
        shape = (1, 8, 8)
        results = defaultdict(list)  # (method, task) -> [(related, score)]
        times = defaultdict(list)
        ind_p = []
        for arch in ARCHS:
            src = build(f"train({arch},digits,0)", cache_dir=cache)
            sig = signature(src, shape)
            nulls = [build(e, cache_dir=cache) for e in default_nulls(src)]
            null = EmpiricalNull(np.array([matching_agreement(src, m, shape)[0] for m in nulls]))
            targets = [(t, build(f"train({arch},digits,0)->{s}", cache_dir=cache), True) for t, s in TASKS.items()]
            targets += [("", build(f"train({arch},digits,{s})", cache_dir=cache), False) for s in INDEPENDENT_SEEDS]
            for task, model, related in targets:
                for method, fn in comparisons(src, sig, x, shape).items():
                    t0 = time.perf_counter()
                    s = fn(model)
                    times[method].append(time.perf_counter() - t0)
                    results[method, arch, task].append((related, s))
                    if method == "matching agreement" and not related:
                        ind_p.append(null.p_value(s))
            console.print(f"{arch}: done", highlight=False)

    methods = ["naive cosine", "matching agreement", "CKA", "signature"]
    table = Table(title="AUC / TPR@1%FPR per task (3 source architectures, 8 independent models each; mean)")
    table.add_column("task")
    for m in methods:
        table.add_column(m, justify="right")
    for task in TASKS:
        cells = []
        for m in methods:
            aucs, tprs = [], []
            for arch in ARCHS:
                pos = results[m, arch, task]
                neg = results[m, arch, ""]
                y = np.array([r for r, _ in pos + neg])
                s = np.array([v for _, v in pos + neg])
                aucs.append(roc_auc_score(y, s) if y.any() and not y.all() else np.nan)
                tprs.append(tpr_at(y, s, 0.01))
            cells.append(f"{np.nanmean(aucs):.2f} / {np.mean(tprs):.2f}")
        table.add_row(task, *cells)
    console.print(table)
    ks = kstest(ind_p, "uniform")
    console.print(
        f"matching agreement, calibrated p-values of {len(ind_p)} independent models (6 null models per "
        f"source, t-tail): KS statistic {ks.statistic:.3f} (p = {ks.pvalue:.3f}); "
        f"fraction below 0.01: {np.mean(np.array(ind_p) < 0.01):.3f}"
    )
    timing = ", ".join(f"{m} {1e3 * statistics.median(times[m]):.1f} ms" for m in methods)
    console.print(f"median time per comparison: {timing}")
    cross_architecture(args.cache, x, console)


def cross_architecture(cache: str | None, x: torch.Tensor, console: Console) -> None:
    """CKA across architectures: copies of a cnn distilled or label-extracted into other architectures against
    independent models of every architecture."""
    with tempfile.TemporaryDirectory() as tmp:
        cache = cache or tmp
        src = build("train(cnn,digits,0)", cache_dir=cache)
        pos = [f"train(cnn,digits,0)->{s}" for s in ("distill(lenet,0)", "distill(mlp,0)", "label_extract(lenet,0)")]
        neg = [f"train({a},digits,{s})" for a in ("cnn", "lenet", "mlp", "resnet-tiny") for s in (1, 2)]
        s = np.array([cka_score(src, build(e, cache_dir=cache), x) for e in pos + neg])
        y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    console.print(
        f"CKA across architectures (3 extractions of a cnn vs 8 independent models of 4 architectures): "
        f"AUC {roc_auc_score(y, s):.2f}, TPR@1%FPR {tpr_at(y, s, 0.01):.2f}; "
        f"scores of copies {np.round(s[:3], 3).tolist()}, of independents {np.round(s[3:], 3).tolist()}"
    )


if __name__ == "__main__":
    main()
