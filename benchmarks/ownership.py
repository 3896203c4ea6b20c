"""Ownership beyond one owner.

Public fingerprint release (``modelprint.commitment``): an AKH fingerprint of a digits CNN, calibrated on
independent CNNs and LeNets, is committed; then, per budget: the size of the commitment and of its openings (all
queries, and the ``k`` a challenge draws), the time to commit, to open and to check an opening against the root;
and the verdicts through full and partial openings on derived models (the owner itself, fine-tunes, a pruned copy)
and on independent CNNs that no calibration saw.

Key-locked models (``modelprint.locking``, AdvParams): per owner model, the test accuracy of the model, of its
locked copy, unlocked with its key and with another lock's key, and what a thief without the key gets from the
locked copy by fine-tuning it on their own split (``attacker``), after clipping its outlying weights or not,
against a model they train from scratch on that split with the same epochs.

The perturbation defence against extraction (``modelprint.adaptive.Adaptive``, ``modelprint serve --adaptive``:
queries that look out of distribution are answered at random): per share of genuine inputs the filter may flag,
the accuracy honest users get on the test split, and the test accuracy of the students the zoo's thieves extract
from the defended model (its labels, or its probabilities for distillation), against the undefended one.

Proof of learning (``modelprint.pol``): per architecture, the time to train while recording, the trace's size,
the time to verify it, and the verdicts on the honest trace, on the trace of another model, and on a trace made up
after the fact for the stolen model.

    python benchmarks/ownership.py            # budgets 100 and 300, 20 null models, 10 independent suspects
    python benchmarks/ownership.py --quick    # budget 100, 10 null models, 4 independent suspects

Per-recipient copies (``modelprint.watermark.recipients``, DeepMarks-style): 8 marked copies of a digits CNN,
their accuracy, and for every number k of colluders (3 random sets each), the share of colluders accused and of
innocent recipients accused, from the average of their weights, then after 2 epochs of fine-tuning it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

import modelprint as mp
from modelprint import commitment, data, locking, pol
from modelprint.access import Model, WhiteBox
from modelprint.adaptive import Adaptive
from modelprint.lineage import build, step
from modelprint.lineage.ops import Node
from modelprint.lineage.train import accuracy, fit
from modelprint.nets import clone, make_net
from modelprint.watermark.recipients import average, distribute, trace

OWNER, CHALLENGE = "train(cnn,digits,0)", "checker 2026-12-02"
DERIVED = [OWNER, f"{OWNER}->finetune(0)", f"{OWNER}->finetune(1)", f"{OWNER}->prune(0.5)"]
LOCKED = ["train(cnn,digits,0)", "train(lenet,digits,1)", "train(mlp,digits,2)", "train(mlp,mnist1d,0)"]


def clipped(model: torch.nn.Module) -> torch.nn.Module:
    """The thief's cleanup: every weight layer clamped to its 99th percentile of magnitude."""
    out = clone(model)
    with torch.no_grad():
        for w in locking.layers(out):
            bound = torch.quantile(w.abs().flatten(), 0.99)
            w.clamp_(-bound, bound)
    return out


THIEVES = ["label_extract(cnn,0,queries=own)", "label_extract(cnn,0,queries=mixup)",
           "label_extract(cnn,0,queries=noise)", "label_extract(cnn,0,queries=natural)", "distill(cnn,0)"]  # fmt: skip


class Served(torch.nn.Module):
    """A model seen only through its answers, as a module (log-probabilities) that the zoo's thieves can query."""

    def __init__(self, model: Model):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.probs(x.cpu()).clamp_min(1e-12).log()


def defended_rows(fprs: tuple[float, ...], thieves: list[str]) -> list[dict]:
    victim, test = build(OWNER), data.load("digits", "test")
    reference = data.load("digits", "train").x
    rows = []
    for fpr in (0.0, *fprs):
        model = WhiteBox(victim, input_shape=(1, 8, 8))
        served = Served(model if fpr == 0 else Adaptive(model, reference, fpr=fpr))
        honest = float((served(test.x).argmax(1) == test.y).float().mean())
        students = {t: accuracy(step(t).apply(Node(served, "digits")).module, test.x, test.y) for t in thieves}
        rows.append({"flagged genuine share": fpr, "honest users' accuracy": honest, **students})
    return rows


def collusion_rows(recipients: int, sizes: tuple[int, ...], sets: int) -> tuple[list[dict], list[float]]:
    test, thief = data.load("digits", "test"), data.load("digits", "attacker")
    names = [f"recipient{i}" for i in range(recipients)]
    copies, key = distribute(build(OWNER), names)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for k in sizes:
        for _ in range(sets):
            chosen = sorted(torch.randperm(recipients, generator=gen)[:k].tolist())
            leak = average([copies[i] for i in chosen])
            tuned = fit(clone(leak), thief.x, thief.y, epochs=2, lr=1e-3, seed=0)
            for name, model in (("averaged", leak), ("averaged, fine-tuned", tuned)):
                accused = {r["recipient"] for r in trace(key, model) if r["accused"]}
                guilty = {names[i] for i in chosen}
                rows.append({"colluders": k, "leak": name, "accuracy": accuracy(model, test.x, test.y),
                             "colluders accused": len(accused & guilty) / k,
                             "innocents accused": len(accused - guilty) / (recipients - k)})  # fmt: skip
    return rows, [accuracy(c, test.x, test.y) for c in copies]


def proof_rows(archs: tuple[str, ...], epochs: int, folder: Path) -> list[dict]:
    rows = []
    for arch in archs:
        (model, trace), t_record = timed(pol.record, arch, "digits", epochs=epochs)
        size = trace.save(folder / "t.pol").stat().st_size
        honest, t_verify = timed(pol.verify, trace, model)
        other = pol.verify(trace, pol.record(arch, "digits", epochs=1, seed=1)[0])
        spoofed = pol.verify(pol.spoof(model), model)
        rows.append({"arch": arch, "steps": len(trace.batches), "checkpoints": len(trace.checkpoints),
                     "record s": t_record, "trace MB": size / 2**20, "verify s": t_verify,
                     "honest": honest.outcome, "another model": other.outcome, "spoofed": spoofed.outcome,
                     "spoof's worst distance": spoofed.evidence["worst_distance"]})  # fmt: skip
    return rows


def locked_rows(epochs: int) -> list[dict]:
    rows = []
    for expr in LOCKED:
        owner, dataset = build(expr), expr.split(",")[1]
        test, thief = data.load(dataset, "test"), data.load(dataset, "attacker")
        (locked, key), t_lock = timed(locking.lock, owner, dataset)
        _, other = locking.lock(owner, dataset, seed=1)
        cfg = owner.mp_config

        fresh = make_net(cfg["arch"], cfg["input_shape"], cfg["num_classes"])
        tuned = {name: fit(clone(m), thief.x, thief.y, epochs=epochs, lr=1e-3, seed=0)
                 for name, m in (("fine-tunes", locked), ("clips, fine-tunes", clipped(locked)),
                                 ("from scratch", fresh))}  # fmt: skip
        models = {"owner": owner, "locked": locked, "unlocked": locking.unlock(locked, key),
                  "another key": locking.unlock(locked, other, strict=False), "clipped": clipped(locked),
                  **{f"thief {name}": m for name, m in tuned.items()}}  # fmt: skip
        rows.append({"model": expr, "weights locked": len(key), "lock s": round(t_lock, 2),
                     **{k: accuracy(m, test.x, test.y) for k, m in models.items()}})  # fmt: skip
    return rows


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    budgets, nulls, independent = ((100,), 10, 4) if args.quick else ((100, 300), 20, 10)
    t0 = time.perf_counter()
    null_models = [f"train({('cnn', 'lenet')[i % 2]},digits,{20 + i})" for i in range(nulls)]
    suspects = [(e, "derived") for e in DERIVED] + [(f"train(cnn,digits,{60 + i})", "independent")
                                                    for i in range(independent)]  # fmt: skip
    owner = build(OWNER)
    sizes, verdicts = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for budget in budgets:
            fp = mp.calibrate(mp.extract(owner, "AKH", "digits", budget), null_models, 0.05)
            committed, t_salt = timed(commitment.commit, fp)
            public, t_root = timed(lambda c=committed: c.commitment)  # salts, then the tree
            t_commit = t_salt + t_root
            public_size = public.save(folder / "c.commitment").stat().st_size
            openings = {"all": None, **{f"k={k}": k for k in (20, 50) if k < budget}}
            for name, k in openings.items():
                opening, t_open = timed(committed.open, k, None if k is None else CHALLENGE)
                size = opening.save(folder / "o.open").stat().st_size
                _, t_proof = timed(opening.proves, public)
                sizes.append({"budget": budget, "opening": name, "commitment bytes": public_size,
                              "opening bytes": size, "commit s": t_commit, "open s": t_open,
                              "check proofs s": t_proof})  # fmt: skip
                for expr, kind in suspects:
                    v, t_check = timed(commitment.check, public, opening, build(expr),
                                       challenge=None if k is None else CHALLENGE)  # fmt: skip
                    verdicts.append({"budget": budget, "opening": name, "suspect": kind, "model": expr,
                                     "related": v.related, "p": v.p_value, "outcome": v.outcome,
                                     "check s": t_check})  # fmt: skip
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"commitments ({nulls} null models; sizes in bytes, times in seconds)")
        print(pd.DataFrame(sizes).round(4).to_string(index=False))
        table = pd.DataFrame(verdicts)
        print("\nverdicts through the openings (related: TPR on derived models, FPR on independent ones)")
        print(table.groupby(["budget", "opening", "suspect"]).agg(
            models=("related", "size"), related=("related", "mean"), median_p=("p", "median"),
            inconclusive=("outcome", lambda o: (o == "inconclusive").mean()), check_s=("check s", "mean"),
        ).round(4).to_string())  # fmt: skip
        fprs, thieves = ((0.05,), THIEVES[1:3]) if args.quick else ((0.01, 0.05, 0.2), THIEVES)
        print(
            "\nthe perturbation defence (out-of-distribution queries answered at random): test accuracy of honest"
            " users and of each thief's student (fpr 0: undefended)"
        )
        print(pd.DataFrame(defended_rows(fprs, thieves)).round(3).to_string(index=False))
        recipients, sizes, sets = (4, (1, 2), 1) if args.quick else (8, (1, 2, 3, 4), 3)
        rows, accuracies = collusion_rows(recipients, sizes, sets)
        print(f"\nper-recipient copies: {recipients} copies of {OWNER} (test accuracy "
              f"{accuracy(owner, data.load('digits', 'test').x, data.load('digits', 'test').y):.3f}), theirs "
              f"{min(accuracies):.3f}-{max(accuracies):.3f}; accused at 0.01 (Holm)")  # fmt: skip
        print(pd.DataFrame(rows).groupby(["colluders", "leak"]).mean().round(3).to_string())
        with tempfile.TemporaryDirectory() as tmp:
            archs, pol_epochs = (("mlp",), 5) if args.quick else (("mlp", "cnn", "lenet"), 20)
            print(f"\nproof of learning ({pol_epochs} epochs of plain SGD on digits)")
            print(pd.DataFrame(proof_rows(archs, pol_epochs, Path(tmp))).round(3).to_string(index=False))
        epochs = 2 if args.quick else 5
        print(f"\nkey-locked models (AdvParams): test accuracy; the thief has its attacker split and {epochs} epochs")
        print(pd.DataFrame(locked_rows(epochs)).round(3).T.to_string(header=False))
    print(f"[{time.perf_counter() - t0:.0f}s]")


if __name__ == "__main__":
    main()
