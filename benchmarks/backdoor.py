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

    python benchmarks/backdoor.py            # 8 models of each backdoor, 20 clean ones
    python benchmarks/backdoor.py --quick    # 3 of each backdoor, 8 clean ones
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

ARCHS, KINDS, ALPHA = ("cnn", "lenet"), ("badnets", "blended", "hidden"), 0.05


def zoo(per_kind: int, clean: int) -> tuple[list[str], list[str]]:
    """Expressions of the backdoored models (target and seed vary) and of the clean ones (half independent,
    half fine-tuned), architectures alternating."""
    backdoored = [
        f"train({ARCHS[i % 2]},digits,{i})->{kind}({(3 * i + k) % 10},{i})"
        for k, kind in enumerate(KINDS)
        for i in range(per_kind)
    ]
    independent = [f"train({ARCHS[i % 2]},digits,{100 + i})" for i in range(clean - clean // 2)]
    tuned = [f"train({ARCHS[i % 2]},digits,{200 + i})->finetune({i})" for i in range(clean // 2)]
    return backdoored, independent + tuned


def screened(backdoored: list[str], clean: list[str]) -> pd.DataFrame:
    """STRIP on 50 triggered and 50 clean inputs per model: flagged shares and batch verdicts."""
    x = data.load("digits", "attacker").x[:50]
    low, high = data_range("digits")
    ops = {step(e.rsplit("->", 1)[1]).name: step(e.rsplit("->", 1)[1]) for e in backdoored}
    runs = [(e, step(e.rsplit("->", 1)[1])) for e in backdoored] + [(e, op) for e in clean for op in ops.values()]
    rows = []
    for expr, op in runs:
        model = build_node(expr).module
        stamped = strip(model, op.trigger.apply(x, low, high), "digits")
        plain = strip(model, x, "digits")
        rows.append({
            "model": "backdoored" if expr in backdoored else "clean", "trigger": op.name,
            "triggered inputs flagged": float(stamped.flagged(ALPHA).float().mean()),
            "clean inputs flagged": float(plain.flagged(ALPHA).float().mean()),
            "triggered batch called backdoored": stamped.verdict(ALPHA).related,
            "clean batch called backdoored": plain.verdict(ALPHA).related,
        })  # fmt: skip
    return pd.DataFrame(rows)


def sifted(backdoored: list[str], clean: list[str]) -> pd.DataFrame:
    """The training-set detectors on each backdoored model's own poisoned training set (recall and precision of the
    removed examples, AUC of the scores within the target class) and on each clean model's clean attacker split
    (the share of it removed)."""
    ds = data.load("digits", "attacker")
    rows = []
    for name in integrity.SIFTERS.names():
        for expr in backdoored:
            op = step(expr.rsplit("->", 1)[1])
            x, y, poisoned = op.training_data("digits")
            found = integrity.sift(build_node(expr).module, (x, y), name)
            other = found.flagged & (y != op.target)
            rows.append({"detector": name, "kind": op.name, **found.against(poisoned),
                         "removed from other classes": float(other.float().mean())})  # fmt: skip
        for expr in clean:
            found = integrity.sift(build_node(expr).module, (ds.x, ds.y), name)
            rows.append({"detector": name, "kind": "clean", "removed": int(found.flagged.sum()),
                         "removed from other classes": float(found.flagged.float().mean())})  # fmt: skip
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--detectors", default=",".join(integrity.DETECTORS.names()))
    args = ap.parse_args()
    t0 = time.perf_counter()
    backdoored, clean = zoo(3, 8) if args.quick else zoo(8, 20)
    test = data.load("digits", "test")
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
                          "attack success": attack_success(built.module, op, "digits"),
                          "after fine-pruning: accuracy": pruned.test_accuracy,
                          "after fine-pruning: attack success": attack_success(pruned.module, op, "digits"),
                          })  # fmt: skip
    installed = pd.DataFrame(installed)
    print(f"backdoors installed ({len(backdoored)} models; agreement and accuracy on the clean test split)")
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(installed.drop(columns="model").groupby("kind").agg(["mean", "min"]).round(3).T.to_string())
    rows = []
    for name in args.detectors.split(","):
        nulls = [integrity.measure(name, e, "digits")[0] for e in clean]
        for i in range(len(clean)):
            v = verdict(name, nulls[i], nulls[:i] + nulls[i + 1 :], ALPHA)
            rows.append({"detector": name, "kind": "clean", "flagged": v.related, "score": v.score})
        for expr, kind in zip(backdoored, installed["kind"], strict=True):
            score, details = integrity.measure(name, expr, "digits")
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
    screens = screened(backdoored, clean).groupby(["model", "trigger"])
    strip_table = screens.mean().round(3)
    strip_table.insert(0, "models", screens.size())
    print(f"\nSTRIP at alpha {ALPHA}: shares of 50 inputs flagged, and of batches called backdoored")
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(strip_table.to_string())
    sifts = sifted(backdoored, clean).groupby(["detector", "kind"])
    sift_table = sifts.mean().round(3)
    sift_table.insert(0, "models", sifts.size())
    print("\ntraining-set detectors on each model's training set (means; clean: its clean attacker split)")
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(sift_table.to_string())
    print(f"[{time.perf_counter() - t0:.0f}s]")


if __name__ == "__main__":
    main()
