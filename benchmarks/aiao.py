"""Do fine-tuned diffusion models stay traceable? AIAO (reconstruction) against an input/output trigger
watermark, on a small diffusers UNet trained on 16x16 digits.

    python benchmarks/aiao.py --quick          # under 10 minutes on 2 cores
    python benchmarks/aiao.py --out aiao-out   # longer attacks, an independent clean UNet, the all-blocks ablation

Steps: train (or load, --base) the UNet; profile busy/lazy blocks by fine-tuning a copy on digits 0-4; embed
each watermark with the same budget; calibrate on clean models (the unmarked UNet and fine-tunes of it);
attack by fine-tuning on digits 5-9 (all weights, only the 3 busiest blocks, or rank-4 LoRA), verifying at
increasing lengths; check held-out clean models. Writes results.csv, quality.csv, profile.png, rates.png and
samples.png to --out and prints the tables. Models and keys are kept there, so a rerun resumes.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import matplotlib
import pandas as pd
import torch

from modelprint import diffusion
from modelprint.diffusion import aiao
from modelprint.errors import ModelFileError
from modelprint.io import atomic_file

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PROFILE_DATA, ATTACK_DATA = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]  # the owner guesses; the attacker uses other data
QUICK = {"base_steps": 600, "embed_steps": 300, "lengths": (25, 50, 100, 200), "kinds": ("full", "busy", "lora"),
         "ablation": False, "independent": False}  # fmt: skip
FULL = {"base_steps": 1500, "embed_steps": 300, "lengths": (25, 50, 100, 200, 400, 800, 1600),
        "kinds": ("full", "busy", "lora"), "ablation": True, "independent": True}  # fmt: skip


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cached_unet(path: Path, build, device: str):
    """The UNet saved at ``path``, or ``build()`` saved there (so an interrupted run resumes)."""
    try:
        return diffusion.load(path, device)
    except ModelFileError:
        unet = build()
        diffusion.save(unet, path)
        return unet


def finetune(unet, classes, steps: int, seed: int, lr: float, device: str):
    tuned = copy.deepcopy(unet)
    diffusion.train(tuned, diffusion.images("train", classes), steps, lr=lr, seed=seed, device=device)
    return tuned


def attack(marked, kind: str, lengths, key, prof, lr: float, device: str) -> list[dict]:
    """Fine-tune a copy of ``marked`` on the attack data at a constant rate, verifying at each length."""
    unet = copy.deepcopy(marked)
    if kind == "full":
        params, rate = None, lr
    elif kind == "busy":
        params, rate = [p for b in prof.busy(3) for p in unet.get_submodule(b).parameters()], lr
    elif kind == "lora":
        params, rate = diffusion.add_lora(unet, rank=4), 10 * lr  # LoRA is usually run at a 10x larger rate
    else:
        raise ValueError(kind)
    rows = []

    def check(step: int, _loss: float) -> None:
        if step in lengths:
            v = aiao.verify(key, unet, device=device)
            unet.train()
            rows.append({"attack": kind, "steps": step, "rate": v.score, "p_value": v.p_value, "detected": v.related,
                         "mean_score": v.evidence["mean_score"]})  # fmt: skip

    diffusion.train(unet, diffusion.images("train", ATTACK_DATA), max(lengths), lr=rate, params=params, seed=11,
                    schedule="constant", device=device, progress=check)  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the short version (under 10 minutes on 2 cores)")
    ap.add_argument("--out", type=Path, default=Path("aiao-out"))
    ap.add_argument("--base", type=Path, help="a trained diffusers UNet folder to watermark instead of training one")
    ap.add_argument("--attack-lr", type=float, default=1e-4, help="fine-tuning attack learning rate (LoRA: 10x)")
    ap.add_argument("--key-seed", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    cfg, out, dev = (QUICK if args.quick else FULL), args.out, args.device
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()

    base_path = args.base or out / "base"
    log(f"base UNet ({base_path})")
    base = cached_unet(base_path, lambda: _trained(cfg["base_steps"], 0, dev), dev)

    log("profiling busy and lazy blocks: a copy fine-tuned on digits 0-4 for 150 steps")
    prof = aiao.profile(base, diffusion.images("train", PROFILE_DATA), steps=150, device=dev)
    prof.plot(out / "profile.png")
    pd.DataFrame(prof.rows()).to_csv(out / "profile.csv", index=False)
    log(f"lazy: {', '.join(prof.lazy())}; busiest: {', '.join(prof.busy(3))}")

    log("clean models: the unmarked UNet and fine-tunes of it")
    clean = [base, finetune(base, ATTACK_DATA, 60, 1, 5e-4, dev), finetune(base, None, 60, 2, 5e-4, dev)]
    held_out = {"finetune(0-4)": finetune(base, PROFILE_DATA, 100, 3, 5e-4, dev)}
    if cfg["independent"]:
        held_out["independent"] = cached_unet(out / "independent", lambda: _trained(cfg["base_steps"], 1, dev), dev)

    schemes = {"aiao": f"aiao(blocks={'+'.join(prof.lazy())})", "trigger-noise": "trigger-noise"}
    if cfg["ablation"]:
        schemes["aiao-all-blocks"] = "aiao"
    reference = diffusion.sample(base, 256, device=dev)
    quality = [{"model": "unmarked", "drift": 0.0, "frechet": diffusion.frechet(reference),
                "confidence": diffusion.confidence(reference), "embed_s": 0.0}]  # fmt: skip
    results, samples = [], {"unmarked": reference[:8]}
    x = diffusion.images("train")
    for name, spec in schemes.items():
        log(f"{name}: embedding ({cfg['embed_steps']} steps)")
        t0 = time.time()
        marked, key = aiao.embed(base, spec, x, args.key_seed, steps=cfg["embed_steps"], device=dev)
        seconds = time.time() - t0
        key = aiao.calibrate(key, clean, device=dev)
        key.save(out / f"{name}.key")
        generated = diffusion.sample(marked, 256, device=dev)
        samples[name] = generated[:8]
        quality.append({"model": name, "drift": float((generated - reference).abs().mean()),
                        "frechet": diffusion.frechet(generated), "confidence": diffusion.confidence(generated),
                        "embed_s": seconds})  # fmt: skip
        v = aiao.verify(key, marked, device=dev)
        results.append({"scheme": name, "attack": "none", "steps": 0, "rate": v.score, "p_value": v.p_value,
                        "detected": v.related, "mean_score": v.evidence["mean_score"]})  # fmt: skip
        for kind in cfg["kinds"]:
            log(f"{name}: attack {kind} up to {max(cfg['lengths'])} steps")
            rows = attack(marked, kind, cfg["lengths"], key, prof, args.attack_lr, dev)
            results += [{"scheme": name, **r} for r in rows]
        for control, model in held_out.items():
            v = aiao.verify(key, model, device=dev)
            results.append({"scheme": name, "attack": f"clean control: {control}", "steps": 0, "rate": v.score,
                            "p_value": v.p_value, "detected": v.related,
                            "mean_score": v.evidence["mean_score"]})  # fmt: skip

    table, quality = pd.DataFrame(results), pd.DataFrame(quality)
    with atomic_file(out / "results.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_file(out / "quality.csv") as tmp:
        quality.to_csv(tmp, index=False)
    _plot_rates(table, out / "rates.png")
    _plot_samples(samples, out / "samples.png")

    print("\nSampling quality (256 DDIM samples from the same seeds; drift = mean |pixel change| vs unmarked):")
    print(quality.round(3).to_string(index=False))
    print("\nVerification rate (fraction of Monte Carlo trials verified) after fine-tuning on digits 5-9;")
    print("x: no longer detected at the key's false-positive rate (0.01):")
    attacked = table[~table.attack.str.startswith("clean")]
    marks = [f"{r:.2f}" + ("" if d else " x") for r, d in zip(attacked.rate, attacked.detected, strict=True)]
    cells = attacked.assign(cell=marks)
    grid = cells.pivot(index=["scheme", "attack"], columns="steps", values="cell").fillna("")
    print(grid.reindex(list(dict.fromkeys(zip(cells.scheme, cells.attack, strict=True)))).to_string())
    print("\nClean controls (never marked; must not be detected):")
    print(table[table.attack.str.startswith("clean")].to_string(index=False))
    log(f"done in {time.time() - started:.0f} s; tables and plots are in {out}")


def _trained(steps: int, seed: int, device: str):
    unet = diffusion.make_unet(seed=seed)
    diffusion.train(unet, diffusion.images("train"), steps, seed=seed, device=device)
    return unet


def _plot_rates(table: pd.DataFrame, path: Path) -> None:
    attacked = table[~table.attack.str.startswith("clean")]
    kinds = [k for k in attacked.attack.unique() if k != "none"]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 3.6), sharey=True, squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for scheme, rows in attacked.groupby("scheme", sort=False):
            before = rows[rows.attack == "none"]
            curve = pd.concat([before, rows[rows.attack == kind]])
            ax.plot(curve.steps.clip(lower=1), curve.rate, marker="o", label=scheme)
        ax.set_xscale("log")
        ax.set_title(f"fine-tune: {kind}")
        ax.set_xlabel("attack steps (0 plotted at 1)")
        ax.axhline(0.9, color="grey", lw=0.8, ls=":")
    axes[0][0].set_ylabel("verification rate")
    axes[0][0].legend()
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _plot_samples(samples: dict[str, torch.Tensor], path: Path) -> None:
    fig, axes = plt.subplots(len(samples), 1, figsize=(8, 1.2 * len(samples)), squeeze=False)
    for ax, (name, images) in zip(axes[:, 0], samples.items(), strict=True):
        ax.imshow(torch.cat(list(images[:, 0]), dim=1).numpy(), cmap="gray", vmin=-1, vmax=1)
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("DDIM samples from the same seeds")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
