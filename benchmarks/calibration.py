"""Do calibrated verdicts hold their false-positive rate? Every fingerprint scheme, the white-box comparisons
(weights, CKA, gradient fields, loss barrier, DeepJudge's layer vote) and every watermark is calibrated on the null bank
(``null_models="auto"``), then verifies held-out independent models that no calibration saw, of the owner's
architecture and of others. Prints, per scheme and stratum, the
empirical FPR at nominal 1% and 5% with exact (Clopper-Pearson) 95% intervals, and whether a perfect copy is
related with p <= 0.001.

    python benchmarks/calibration.py            # bank at 1%: 459 of each architecture; held out: 1000 of the
                                                # owner's architecture, 400 of each other one
    python benchmarks/calibration.py --quick    # bank at 5%: 90 of each; 40 of each held out
    python benchmarks/calibration.py --strata own --schemes SAC-m    # one stratum's rows, at a fraction of the cost
    python benchmarks/calibration.py --strata own --bank-seed 110000   # the same held-out models, another bank

At 1% the check is demanding: an interval's upper bound is within 2% only with >= 183 held-out models and none
of them accused, >= 300 and one, >= 1000 and up to ten. A verdict that holds its rate exactly (about 1 in 460
beyond every one of 459 bank models, for the training-conditional p-value) accuses 2.2 of 1000 on average, so
the owner's architecture gets 1000 held-out models: with 200, one unlucky accusation in two would fail the check
for a verdict that is right. The "other architectures" stratum has 800 (MLP and CNN).

A decision holds for 99% of banks (``decide.CONFIDENCE``), so about one row in a hundred fails on a given bank
while its scheme is right: ``--bank-seed`` draws another bank for the same held-out models, which tells such a
bank from a scheme whose scores are not exchangeable between the bank and the held-out models.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

import modelprint as mp
from modelprint import data, nullbank, watermark
from modelprint.access import architecture
from modelprint.decide import Null, Scale, combine, needed
from modelprint.fingerprint import NAMED, loss_path
from modelprint.fingerprint.cka import cka_score
from modelprint.fingerprint.deepjudge import METRICS, LayerJudge
from modelprint.fingerprint.gradfield import OwnerField
from modelprint.lineage import build

OWNER, DATASET, BUDGET = "train(lenet,digits,0)", "digits", 100
HELD_OUT_SEED = 90_000  # far from the bank's seeds: these models are never calibrated on
WATERMARKS = ("trigger-set", "noise", "content", "unrelated", "frontier-stitching", "uchida")


def interval(k: int, n: int) -> tuple[float, float]:
    """Exact (Clopper-Pearson) 95% confidence interval of a binomial proportion."""
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    return float(ci.low), float(ci.high)


def rows_for(name: str, p_values: dict[str, list[float]], copy_p: float | None) -> list[dict]:
    out = []
    for stratum, ps in p_values.items():
        ps = np.asarray(ps)
        row = {"scheme": name, "stratum": stratum, "held_out": len(ps), "copy_p": copy_p}
        for a in (0.01, 0.05):
            k = int((ps <= a).sum())
            lo, hi = interval(k, len(ps))
            row[f"fpr@{a:g}"] = k / len(ps)
            row[f"ci@{a:g}"] = f"[{lo:.3f}, {hi:.3f}]"
            row[f"ok@{a:g}"] = hi <= 2 * a
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="bank at 5%% and 40 held-out models of each architecture")
    ap.add_argument("--out", type=Path, default=Path("calibration-out"))
    ap.add_argument("--schemes", default="", help="comma-separated subset (fingerprint names, weights, cka, "
                    "gradient-field, barrier, deepjudge, watermark names)")  # fmt: skip
    ap.add_argument("--strata", choices=("all", "own", "others"), default="all",
                    help="the owner's architecture, the others or both (a verdict on a suspect of known architecture "
                    "is decided on its own stratum, so each can be checked alone)")  # fmt: skip
    ap.add_argument("--bank-seed", type=int, default=nullbank.BANK_SEED,
                    help="the bank's first seed (another draws another bank; the held-out seeds stay)")  # fmt: skip
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    alpha_bank, held_own, held_other = (0.05, 40, 40) if args.quick else (0.01, 1000, 400)
    if args.bank_seed < HELD_OUT_SEED + held_own and HELD_OUT_SEED < args.bank_seed + needed(alpha_bank):
        ap.error(
            f"--bank-seed {args.bank_seed}: the bank's seeds would overlap the held-out models' ({HELD_OUT_SEED}+)"
        )
    cache = args.out / "zoo"
    wanted = set(filter(None, args.schemes.split(",")))
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", flush=True)

    owner = build(OWNER, cache_dir=cache, device=args.device)
    own = architecture(owner)
    others = [a for a in nullbank.OTHER_ARCHS if a != own]
    archs = {"all": [own, *others], "own": [own], "others": others}[args.strata]
    bank, held = [], []
    for arch in archs:  # each architecture's bank and held-out models: seeds apart, so never the same model
        bank += nullbank.build(DATASET, alpha_bank, arch, own_only=True, seed_base=args.bank_seed, cache_dir=cache,
                               device=args.device, progress=log)  # fmt: skip
        held += nullbank.build(DATASET, alpha_bank, arch, own_only=True, count=held_own if arch == own else held_other,
                               seed_base=HELD_OUT_SEED, cache_dir=cache, device=args.device, progress=log)  # fmt: skip
    log(f"bank {len(bank)} models, held out {len(held)}")

    def stratum(m) -> str:
        return "owner's architecture" if m.arch == own else "other architectures"

    rows: list[dict] = []
    args.out.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every scheme: a long run that stops keeps what it measured
        pd.DataFrame(rows).to_csv(args.out / "calibration.csv", index=False)

    for scheme in NAMED:
        if wanted and scheme not in wanted:
            continue
        fp = mp.extract(owner, scheme, DATASET, BUDGET, cache_dir=cache, device=args.device)
        fp = mp.calibrate(fp, [b.module for b in bank], alpha_bank, cache_dir=cache, device=args.device)
        ps: dict[str, list[float]] = {}
        for m in held:
            ps.setdefault(stratum(m), []).append(mp.verify(fp, m.module, alpha=0.05).p_value)
        rows += rows_for(scheme, ps, mp.verify(fp, copy.deepcopy(owner), alpha=0.01).p_value)
        save()
        log(f"{scheme} done")
    if own in archs and (not wanted or "weights" in wanted):
        fp = mp.extract(owner, "weights")
        own_bank = [b.module for b in bank if b.arch == own]
        fp = mp.calibrate(fp, own_bank, alpha_bank)
        ps = {"owner's architecture": [mp.verify(fp, m.module).p_value for m in held if m.arch == own]}
        rows += rows_for("weights", ps, mp.verify(fp, copy.deepcopy(owner)).p_value)
        save()
        log("weights done")
    test = data.load(DATASET, "test")
    x, y = test.x[:200], test.y[:200]
    field = OwnerField.of(owner, x[:64])
    white_box = {  # name: (similarity to the owner, its scale, whether only the owner's architecture compares)
        "cka": (lambda m: cka_score(owner, m, x), Scale("correlation"), False),
        "gradient-field": (field.similarity, Scale("correlation"), False),
        "barrier": (lambda m: loss_path(owner, m, x, y).score, Scale("distance"), True),
    }
    for name, (similarity, scale, own_only) in white_box.items():
        if (wanted and name not in wanted) or (own_only and own not in archs):
            continue
        pool = [b for b in bank if b.arch == own or not own_only]
        null = Null(np.array([similarity(b.module) for b in pool]), tuple(b.arch for b in pool), scale)
        ps = {}
        for m in held:
            if m.arch == own or not own_only:
                ps.setdefault(stratum(m), []).append(null.p_value(similarity(m.module), m.arch))
        rows += rows_for(name, ps, null.p_value(similarity(copy.deepcopy(owner)), own))
        save()
        log(f"{name} done")
    # DeepJudge: its four layer metrics, each calibrated, then the calibrated vote
    if own in archs and (not wanted or "deepjudge" in wanted):
        judge = LayerJudge.of(owner, DATASET, device=args.device)
        pool = [b for b in bank if b.arch == own]
        sims = [judge.similarity(b.module) for b in pool]
        nulls = {
            k: Null(np.array([s[k] for s in sims]), tuple(b.arch for b in pool), Scale("distance")) for k in METRICS
        }

        def vote(m) -> float:
            s = judge.similarity(m)
            return combine([nulls[k].p_value(s[k], own) for k in METRICS], "vote")

        ps = {"owner's architecture": [vote(m.module) for m in held if m.arch == own]}
        rows += rows_for("deepjudge (white-box vote)", ps, vote(copy.deepcopy(owner)))
        save()
        log("deepjudge done")
    for spec in WATERMARKS:
        if wanted and spec not in wanted:
            continue
        marked, key = watermark.embed(copy.deepcopy(owner), spec, DATASET, device=args.device)
        # a white-box mark is read from one layer of the owner's architecture: other architectures lack it
        readable = [m for m in held if m.arch == own or not key.scheme.white_box]
        if key.chance is None:
            key = watermark.calibrate(key, [b.module for b in bank], alpha_bank, device=args.device)
        ps = {}
        for m in readable:
            ps.setdefault(stratum(m), []).append(watermark.verify(key, m.module, alpha=0.05).p_value)
        rows += rows_for(f"watermark:{spec}", ps, watermark.verify(key, marked, alpha=0.01).p_value)
        save()
        log(f"watermark {spec} done")

    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(
        f"\nnull bank at FPR {alpha_bank:g}: {len(bank)} models; {len(held)} held out; {time.perf_counter() - t0:.0f} s"
    )


if __name__ == "__main__":
    torch.set_num_threads(1)  # tiny models: a second thread costs more in synchronisation than it gains
    main()
