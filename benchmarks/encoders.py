"""A small transformer provenance benchmark (base models x modifications, after LeaFBench): every scheme against
every modification of two owners, with AUC, TPR@1%FPR and the false-positive rate of its calibrated verdict.

- **MiniLM** (all-MiniLM-L6-v2, bundled): fine-tuned (full; LoRA merged), heads or MLP units pruned, int8,
  permuted, rotated (norms folded), a disguised copy (fine-tuned, permuted, rotated), and a distilled 3-block
  student. Negatives: encoders of its architecture and tokenizer trained from scratch on the bundled text
  (``derive.independent``). Schemes: white-box units / invariants / hidden-cka, black-box embeddings / ranks.
- **ViT** (modelprint's own, digits patches, width 32, trained by the lineage module): fine-tuned, pruned, int8,
  permuted + rotated, disguised, and distilled into a fresh ViT of the default width. Negatives: ViTs of other
  seeds. Schemes: the white-box three and two black-box fingerprints (ModelDiff, IPGuard) through the same API.

The calibrated FPR is two-fold: each half of the negatives is the null of the verdicts on the other half, at
``--alpha`` (units: the larger of the null's and the analytic p-value, as ``compare`` decides). With fewer than
100 negatives TPR@1%FPR is n/a. Negatives here share their owner's training data and recipe family, so they are
harder than independent pretrained models; they are easier than a foreign pretrained encoder of another corpus
would be for the black-box schemes, which this offline benchmark cannot draw on.

    python benchmarks/encoders.py            # 20 MiniLM negatives, 30 ViT negatives
    python benchmarks/encoders.py --quick    # 6 and 10 (under 10 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

import modelprint as mp
from modelprint.bench.metrics import min_negatives, tpr_at
from modelprint.decide import Null, Scale
from modelprint.errors import ConfigError
from modelprint.io import save_figure
from modelprint.lineage import build
from modelprint.transformer import embedding, load_encoder, similarity
from modelprint.transformer.derive import derive, independent

WHITE_BOX = ("units", "invariants", "hidden-cka")
TEXT_MODS = {
    "finetune": "finetune(0,steps={steps})",
    "lora": "lora(0,steps={steps})",
    "prune heads 25%": "prune_heads(0.25)",
    "prune units 25%": "prune_units(0.25)",
    "int8": "quantize(int8)",
    "permute": "permute(0)",
    "rotate": "rotate(0)",
    "disguised": "finetune(1,steps={steps})->permute(2)->rotate(3)",
    "distilled (3 blocks)": "distill(0,steps={distill})",
}
VIT = "train(vit,digits,{},width=32)"
VIT_MODS = {
    "finetune": "finetune(1,epochs=2)",
    "prune heads 25%": "prune_heads(0.25)",
    "prune units 25%": "prune_units(0.25)",
    "int8": "quantize(int8)",
    "permute+rotate": "rotate(1)->permute(2)",
    "disguised": "rotate(1)->permute(2)->finetune(3,epochs=1)",
    "distilled (vit)": "distill(same,4)",
}
NEGATIVE_SEED = 90_000


def white_box(owner, model, data) -> dict:
    """Each white-box score of ``model`` against ``owner`` (NaN where the method cannot compare the two), and the
    analytic p-value of units."""
    out = {}
    for method in WHITE_BOX:
        try:
            score, evidence = similarity(method, owner, model, data)
        except ConfigError:  # e.g. units across depths: ranks last
            score, evidence = np.nan, {}
        out[method] = score
        if method == "units":
            out["units:analytic"] = evidence.get("analytic_p_value", 1.0)
    return out


def calibrated_fpr(neg, pos, scale: Scale, alpha: float, analytic=None) -> tuple[float, float]:
    """Two-fold: each half of the negatives calibrates the verdicts on the other half (and on every positive).
    ``analytic``: (negatives', positives') p-values that a verdict must also clear (units)."""
    an_neg, an_pos = analytic if analytic is not None else (np.zeros(len(neg)), np.zeros(len(pos)))
    half = np.arange(len(neg)) % 2 == 0
    false, true = [], []
    for cal in (half, ~half):
        null = Null(np.nan_to_num(neg[cal], nan=scale.lo), scale=scale)
        false += [_p(null, s, a, alpha) <= alpha for s, a in zip(neg[~cal], an_neg[~cal], strict=True)]
        true += [_p(null, s, a, alpha) <= alpha for s, a in zip(pos, an_pos, strict=True)]
    return float(np.mean(false)), float(np.mean(true))


def _p(null: Null, score: float, analytic: float, alpha: float) -> float:
    return 1.0 if np.isnan(score) else max(null.p_value(float(score), alpha=alpha), analytic)


def table(scores: pd.DataFrame, alpha: float) -> pd.DataFrame:
    rows = []
    for (base, scheme), df in scores.groupby(["base", "scheme"], sort=False):
        neg = df[df.modification == "independent"]
        scale = Scale("unit") if scheme == "ranks" else Scale("correlation")
        for mod, pos in df[df.modification != "independent"].groupby("modification", sort=False):
            y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
            s = np.nan_to_num(np.r_[pos.score, neg.score], nan=-1e300)
            analytic = (neg.analytic.to_numpy(), pos.analytic.to_numpy()) if scheme == "units" else None
            fpr, tpr = calibrated_fpr(neg.score.to_numpy(), pos.score.to_numpy(), scale, alpha, analytic)
            rows.append({
                "base": base, "scheme": scheme, "modification": mod, "score": float(pos.score.mean()),
                "negatives max": float(neg.score.max()), "auc": roc_auc_score(y, s),
                "tpr@1%": tpr_at(y, s, 0.01) if len(neg) >= min_negatives(0.01) else np.nan,
                f"related@{alpha:g}": tpr, f"fpr@{alpha:g}": fpr, "negatives": len(neg),
            })  # fmt: skip
    return pd.DataFrame(rows)


def plot(out: pd.DataFrame, path: Path) -> None:
    """One heat map of AUC per base model: modifications by schemes, each cell marked with its AUC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bases = list(dict.fromkeys(out.base))
    fig, axes = plt.subplots(1, len(bases), figsize=(5.5 * len(bases), 4.5), squeeze=False)
    for ax, base in zip(axes[0], bases, strict=True):
        grid = out[out.base == base].pivot_table(index="modification", columns="scheme", values="auc", sort=False)
        ax.imshow(grid.to_numpy(), vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        ax.set(title=f"{base}: AUC", xticks=range(grid.shape[1]), yticks=range(grid.shape[0]))
        ax.set_xticklabels(grid.columns, rotation=30, ha="right")
        ax.set_yticklabels(grid.index)
        for (i, j), v in np.ndenumerate(grid.to_numpy()):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def text_rows(args, log) -> list[dict]:
    owner = load_encoder("minilm", device=args.device)
    steps, distill_steps = (30, 60) if args.quick else (60, 150)
    models = {}
    for name, expr in TEXT_MODS.items():
        t0 = time.perf_counter()
        models[name] = derive(owner, expr.format(steps=steps, distill=distill_steps))
        log(f"minilm {name}: {time.perf_counter() - t0:.0f}s")
    n_neg, neg_steps = (6, 20) if args.quick else (20, 60)
    negs = []
    for i in range(n_neg):
        negs.append(independent(NEGATIVE_SEED + i, owner, steps=neg_steps))
        log(f"minilm independent {i + 1}/{n_neg}")
    fps = {access: embedding.extract(owner, access) for access in embedding.ACCESS}
    rows = []
    for mod, model in [*models.items(), *(("independent", m) for m in negs)]:
        t0 = time.perf_counter()
        scores = white_box(owner, model, "text") | {a: fp.score(model) for a, fp in fps.items()}
        rows += _rows("minilm", mod, scores)
        log(f"scored minilm {mod}: {time.perf_counter() - t0:.0f}s")
    return rows


def vit_rows(args, log) -> list[dict]:
    cache = Path(args.out) / "zoo"
    owner = build(VIT.format(0), cache_dir=cache, device=args.device)
    models = {name: build(f"{VIT.format(0)}->{expr}", cache_dir=cache, device=args.device)
              for name, expr in VIT_MODS.items()}  # fmt: skip
    n_neg = 10 if args.quick else 30
    negs = [build(VIT.format(NEGATIVE_SEED + i), cache_dir=cache, device=args.device) for i in range(n_neg)]
    log(f"vit: owner, {len(models)} modifications, {n_neg} independents built")
    fps = {s: mp.extract(owner, s, "digits", 100, device=args.device) for s in ("ModelDiff", "IPGuard")}
    rows = []
    for mod, model in [*models.items(), *(("independent", m) for m in negs)]:
        scores = white_box(owner, model, "digits") | {s: mp.score(fp, model) for s, fp in fps.items()}
        rows += _rows("vit", mod, scores)
    return rows


def _rows(base: str, mod: str, scores: dict) -> list[dict]:
    analytic = scores.pop("units:analytic")
    return [{"base": base, "modification": mod, "scheme": s, "score": float(v), "analytic": analytic if s == "units"
             else np.nan} for s, v in scores.items()]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--only", choices=("minilm", "vit"), help="one base model")
    ap.add_argument("--out", default="transformer-bench")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f}s] {msg}", flush=True)

    torch.manual_seed(0)
    rows = []
    for base, make in (("vit", vit_rows), ("minilm", text_rows)):
        if args.only in (None, base):
            rows += make(args, log)
    scores = pd.DataFrame(rows)
    scores.to_csv(Path(args.out) / "scores.csv", index=False)
    out = table(scores, args.alpha)
    out.to_csv(Path(args.out) / "encoders.csv", index=False)
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.float_format", "{:.3f}".format):
        print(out.to_string(index=False))
    plot(out, Path(args.out) / "auc.png")
    print(f"\n{time.perf_counter() - t_start:.0f} s; tables in {args.out}/encoders.csv, scores.csv; AUC map auc.png")


if __name__ == "__main__":
    main()
