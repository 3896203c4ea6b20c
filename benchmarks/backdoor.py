"""Backdoor installation and detection on the digits zoo. Backdoored models (BadNets, blended and hidden, each
with its own target and seed, into CNNs and LeNets) and clean ones (independent seeds, and fine-tunes): the attack
success and clean test accuracy of every backdoored model (its agreement with its clean parent, and what is left
of it after Fine-Pruning, Liu et al. 2018, as a defence: ``->fineprune(0)``), and each
detector's detection rate on them and false-positive rate on the clean ones at alpha 0.05. Every clean model is
decided against the other clean models' scores (leave-one-out), every backdoored one against all of them.

Activation Clustering and Spectral Signatures sift a training set rather than judge a model: each backdoored model's
own poisoned training set, and each clean model's clean one. Reported: recall and precision of the examples they
remove, the AUC of their scores within the target class, and the share removed from classes without poison.

STRIP screens inputs rather than models: every model is asked about 50 inputs of the attacker split stamped with
a backdoor's trigger (its own for a backdoored model; each kind's in turn for a clean one) and about 50 clean
ones. Reported: the share of triggered inputs flagged at alpha 0.05, and how often a batch is called backdoored.

The diff between two models (``integrity.diff``): every backdoored model against its clean parent, and every
fine-tuned or pruned clean model against its own, with Neural Cleanse (gradients) and the label-only search:
how often a trigger is found, in the right class, its size and the queries it took.

    python benchmarks/backdoor.py                    # 8 models of each backdoor, 20 clean ones
    python benchmarks/backdoor.py --quick            # 3 of each backdoor, 8 clean ones
    python benchmarks/backdoor.py --data mnist1d     # MLPs and 1-D CNNs on MNIST-1D sequences
    python benchmarks/backdoor.py --plot roc.png     # and each detector's ROC over the models
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from modelprint import data, integrity
from modelprint.integrity.backdoor import verdict
from modelprint.integrity.strip import strip
from modelprint.lineage import build_node, step
from modelprint.lineage.backdoor import attack_success, data_range
from modelprint.lineage.train import predict

ARCHS = {"digits": ("cnn", "lenet"), "mnist1d": ("mlp", "cnn1d")}
KINDS, ALPHA, DIFFS = ("badnets", "blended", "hidden"), 0.05, ("neural-cleanse", "label-search")


def zoo(dataset: str, per_kind: int, clean: int) -> tuple[list[str], list[str]]:
    """Expressions of the backdoored models (target and seed vary) and of the clean ones (half independent,
    half fine-tuned), architectures alternating."""
    archs = ARCHS[dataset]
    backdoored = [
        f"train({archs[i % 2]},{dataset},{i})->{kind}({(3 * i + k) % 10},{i})"
        for k, kind in enumerate(KINDS)
        for i in range(per_kind)
    ]
    independent = [f"train({archs[i % 2]},{dataset},{100 + i})" for i in range(clean - clean // 2)]
    tuned = [f"train({archs[i % 2]},{dataset},{200 + i})->finetune({i})" for i in range(clean // 2)]
    return backdoored, independent + tuned


def diffed(dataset: str, backdoored: list[str], clean: list[str]) -> pd.DataFrame:
    """Each backdoored model against its parent, each derived clean model (fine-tuned, and its parent pruned by a
    third) against its own: found, right class, trigger size, queries."""
    parent = [e.rsplit("->", 1)[0] for e in clean if "->" in e]
    pairs = [(e.rsplit("->", 1)[0], e, step(e.rsplit("->", 1)[1]).name) for e in backdoored]
    pairs += [(p, e, "finetune") for p, e in zip(parent, [e for e in clean if "->" in e], strict=True)]
    pairs += [(p, f"{p}->prune(0.3)", "prune") for p in parent]
    rows = []
    for name in DIFFS:
        for trusted, suspect, kind in pairs:
            v = integrity.diff(trusted, suspect, dataset, name)
            target = step(suspect.rsplit("->", 1)[1]).target if kind in KINDS else None
            rows.append({"detector": name, "kind": kind, "found": v.related,
                         "right class": v.related and v.evidence["class"] == target,
                         "trigger positions": v.evidence["trigger_positions"], "queries": v.queries})  # fmt: skip
    return pd.DataFrame(rows)


def roc(scores: pd.DataFrame, path: str) -> pd.Series:
    """Each detector's ROC over the models (every backdoor kind against the clean ones), drawn to ``path``; its
    AUC per detector and kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    detectors = scores.detector.unique()
    fig, axes = plt.subplots(1, len(detectors), figsize=(4 * len(detectors), 4), squeeze=False)
    aucs = {}
    for ax, name in zip(axes[0], detectors, strict=True):
        mine = scores[scores.detector == name]
        clean = mine[mine.kind == "clean"].score
        for kind in KINDS:
            positive = mine[mine.kind == kind].score
            truth = np.r_[np.ones(len(positive)), np.zeros(len(clean))]
            both = np.r_[positive, clean]
            aucs[(name, kind)] = roc_auc_score(truth, both)
            fpr, tpr, _ = roc_curve(truth, both)
            ax.step(fpr, tpr, where="post", label=f"{kind} (AUC {aucs[(name, kind)]:.2f})")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(title=name, xlabel="false-positive rate (clean models)", ylabel="detection rate")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return pd.Series(aucs, name="AUC")


def screened(dataset: str, backdoored: list[str], clean: list[str]) -> pd.DataFrame:
    """STRIP on 50 triggered and 50 clean inputs per model: flagged shares and batch verdicts."""
    x = data.load(dataset, "attacker").x[:50]
    low, high = data_range(dataset)
    ops = {step(e.rsplit("->", 1)[1]).name: step(e.rsplit("->", 1)[1]) for e in backdoored}
    runs = [(e, step(e.rsplit("->", 1)[1])) for e in backdoored] + [(e, op) for e in clean for op in ops.values()]
    rows = []
    for expr, op in runs:
        model = build_node(expr).module
        stamped = strip(model, op.trigger.apply(x, low, high), dataset)
        plain = strip(model, x, dataset)
        rows.append({
            "model": "backdoored" if expr in backdoored else "clean", "trigger": op.name,
            "triggered inputs flagged": float(stamped.flagged(ALPHA).float().mean()),
            "clean inputs flagged": float(plain.flagged(ALPHA).float().mean()),
            "triggered batch called backdoored": stamped.verdict(ALPHA).related,
            "clean batch called backdoored": plain.verdict(ALPHA).related,
        })  # fmt: skip
    return pd.DataFrame(rows)


def sifted(dataset: str, backdoored: list[str], clean: list[str]) -> pd.DataFrame:
    """The training-set detectors on each backdoored model's own poisoned training set (recall and precision of the
    removed examples, AUC of the scores within the target class) and on each clean model's clean attacker split
    (the share of it removed)."""
    ds = data.load(dataset, "attacker")
    rows = []
    for name in integrity.SIFTERS.names():
        for expr in backdoored:
            op = step(expr.rsplit("->", 1)[1])
            x, y, poisoned = op.training_data(dataset)
            found = integrity.sift(build_node(expr).module, (x, y), name)
            other = found.flagged & (y != op.target)
            rows.append({"detector": name, "kind": op.name, **found.against(poisoned),
                         "removed from other classes": float(other.float().mean())})  # fmt: skip
        for expr in clean:
            found = integrity.sift(build_node(expr).module, (ds.x, ds.y), name)
            rows.append({"detector": name, "kind": "clean", "removed": int(found.flagged.sum()),
                         "removed from other classes": float(found.flagged.float().mean())})  # fmt: skip
    return pd.DataFrame(rows)


def show(title: str, rows: pd.DataFrame, by: list[str], count: str) -> None:
    """Print the means of ``rows`` per group, with each group's size."""
    groups = rows.groupby(by)
    table = groups.mean().round(3)
    table.insert(0, count, groups.size())
    print(f"\n{title}")
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table.to_string())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--detectors", default=",".join(integrity.DETECTORS.names()))
    ap.add_argument("--data", default="digits", choices=sorted(ARCHS))
    ap.add_argument("--plot", help="Write each detector's ROC over the models to this PNG.")
    args = ap.parse_args()
    t0 = time.perf_counter()
    backdoored, clean = zoo(args.data, 3, 8) if args.quick else zoo(args.data, 8, 20)
    test = data.load(args.data, "test")
    installed = []
    for expr in backdoored:
        parent, built, pruned = (
            build_node(expr.rsplit("->", 1)[0]),
            build_node(expr),
            build_node(f"{expr}->fineprune(0)"),
        )
        agree = (predict(built.module, test.x).argmax(1) == predict(parent.module, test.x).argmax(1)).float().mean()
        op = step(expr.rsplit("->", 1)[1])
        installed.append({"kind": op.name, "model": expr, "clean accuracy": built.test_accuracy,
                          "parent accuracy": parent.test_accuracy, "agreement with parent": float(agree),
                          "attack success": attack_success(built.module, op, args.data),
                          "after fine-pruning: accuracy": pruned.test_accuracy,
                          "after fine-pruning: attack success": attack_success(pruned.module, op, args.data),
                          })  # fmt: skip
    installed = pd.DataFrame(installed)
    print(f"backdoors installed ({len(backdoored)} models; agreement and accuracy on the clean test split)")
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(installed.drop(columns="model").groupby("kind").agg(["mean", "min"]).round(3).T.to_string())
    rows = []
    for name in args.detectors.split(","):
        nulls = [integrity.measure(name, e, args.data)[0] for e in clean]
        for i in range(len(clean)):
            v = verdict(name, nulls[i], nulls[:i] + nulls[i + 1 :], ALPHA)
            rows.append({"detector": name, "kind": "clean", "flagged": v.related, "score": v.score})
        for expr, kind in zip(backdoored, installed["kind"], strict=True):
            score, details = integrity.measure(name, expr, args.data)
            v = verdict(name, score, nulls, ALPHA, **details)
            target = step(expr.rsplit("->", 1)[1]).target
            rows.append({"detector": name, "kind": kind, "flagged": v.related, "score": score,
                         "right class": v.related and details.get("class") == target})  # fmt: skip
    scores = pd.DataFrame(rows)
    table = scores.groupby(["detector", "kind"]).agg(
        models=("flagged", "size"), flagged=("flagged", "mean"), right_class=("right class", "mean"),
        median_score=("score", "median"), min_score=("score", "min"), max_score=("score", "max"),
    )  # fmt: skip
    print(f"\ndetection at alpha {ALPHA} (flagged: TPR for backdoors, FPR for clean models, leave-one-out)")
    with pd.option_context("display.width", 250):
        print(table.round(3).to_string())
    clean_scores = scores[scores.kind == "clean"].score
    print(f"clean scores: mean {np.mean(clean_scores):.2f}, max {np.max(clean_scores):.2f}")
    if args.plot:
        aucs = roc(scores, args.plot)
        print(f"AUC over the models (ROC drawn to {args.plot})\n{aucs.round(3).unstack().to_string()}")
    show("the diff against a trusted parent (means; found: TPR for backdoors, FPR for fine-tunes and prunes)",
         diffed(args.data, backdoored, clean), ["detector", "kind"], "pairs")  # fmt: skip
    show(f"STRIP at alpha {ALPHA}: shares of 50 inputs flagged, and of batches called backdoored",
         screened(args.data, backdoored, clean), ["model", "trigger"], "models")  # fmt: skip
    show("training-set detectors on each model's training set (means; clean: its clean attacker split)",
         sifted(args.data, backdoored, clean), ["detector", "kind"], "models")  # fmt: skip
    print(f"[{time.perf_counter() - t0:.0f}s]")


if __name__ == "__main__":
    main()
