"""``modelprint diffusion``: small diffusion models (diffusers UNet) for watermark experiments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from .common import (
    PROGRESS_COLUMNS,
    DeviceOpt,
    _ints,
    check_device,
    console,
    err_console,
    show_verdict,
)

diffusion_app = typer.Typer(
    help="Small diffusion models (diffusers UNet) for watermark experiments.", no_args_is_help=True
)


@diffusion_app.command("train")
def diffusion_train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the diffusers checkpoint and samples.png.")],
    steps: Annotated[int, typer.Option("--steps", help="Adam steps (batches of 64).")] = 2000,
    classes: Annotated[str, typer.Option("--classes", help="Comma-separated digits to train on.")] = "all",
    init: Annotated[Path | None, typer.Option("--init", help="Fine-tune this checkpoint instead.")] = None,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = 2e-3,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the weights and batches.")] = 0,
    device: DeviceOpt = "cpu",
) -> None:
    """Train a 16x16 digits UNet (DDPM) from scratch, or fine-tune one (--init) on a subset of classes."""
    from .. import diffusion

    device = check_device(device)
    x = diffusion.images("train", _classes(classes))
    unet = diffusion.load(init, device) if init else diffusion.make_unet(seed=seed)
    with Progress(*PROGRESS_COLUMNS, console=err_console, transient=True) as bar:
        task = bar.add_task("training", total=steps)
        losses = diffusion.train(
            unet, x, steps, lr=lr, seed=seed, device=device,
            progress=lambda i, loss: bar.update(task, completed=i, description=f"training (loss {loss:.3f})"),
        )  # fmt: skip
    diffusion.save(unet, out)
    grid = diffusion.sample(unet, 16, seed=seed, device=device)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(out / "samples.png", grid.reshape(4, 4, 16, 16).permute(0, 2, 1, 3).reshape(64, 64).numpy(), cmap="gray")
    console.print(f"wrote {out} (final loss {sum(losses[-50:]) / len(losses[-50:]):.4f}) and {out / 'samples.png'}")


def _classes(text: str) -> list[int] | None:
    return None if text == "all" else _ints(text, "--classes")


@diffusion_app.command("profile")
def diffusion_profile(
    model: Annotated[Path, typer.Argument(help="A diffusers UNet folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the bar chart (PNG).")] = Path("profile.png"),
    classes: Annotated[str, typer.Option("--classes", help="Digits the copy is fine-tuned on.")] = "0,1,2,3,4",
    steps: Annotated[int, typer.Option("--steps", help="Fine-tuning steps.")] = 150,
    device: DeviceOpt = "cpu",
) -> None:
    """Busy and lazy blocks: fine-tune a copy and measure how far each block's weights and features move."""
    from .. import diffusion
    from ..diffusion import aiao

    device = check_device(device)
    unet = diffusion.load(model, device)
    with Progress(*PROGRESS_COLUMNS, console=err_console, transient=True) as bar:
        task = bar.add_task("fine-tuning a copy", total=steps)
        prof = aiao.profile(unet, diffusion.images("train", _classes(classes)), steps=steps, device=device,
                            progress=lambda i, _: bar.update(task, completed=i))  # fmt: skip
    table = Table("block", "weights", "features", "")
    for r in prof.rows():
        lazy = "lazy" if r["lazy"] else ""
        table.add_row(r["block"], f"{r['weight_change']:.4f}", f"{r['feature_change']:.4f}", lazy)
    console.print(table)
    console.print(f"wrote {prof.plot(out)}; lazy blocks for aiao: {'+'.join(prof.lazy())}")


@diffusion_app.command("embed")
def diffusion_embed(
    model: Annotated[Path, typer.Argument(help="A diffusers UNet folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the watermarked UNet.")],
    key_path: Annotated[Path, typer.Option("--key", help="Where to write the secret key.")],
    scheme: Annotated[
        str, typer.Option("--scheme", "-s", help="aiao (lazy blocks profiled first), aiao(blocks=...), trigger-noise.")
    ] = "aiao",
    steps: Annotated[int, typer.Option("--steps", help="Embedding steps.")] = 300,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = 1e-3,
    key_seed: Annotated[int, typer.Option("--key-seed", help="Seed of the key.")] = 0,
    profile_classes: Annotated[
        str, typer.Option("--profile-classes", help="Digits the lazy-block profile fine-tunes on (aiao).")
    ] = "0,1,2,3,4",
    device: DeviceOpt = "cpu",
) -> None:
    """Plant a diffusion watermark in MODEL (trained on digits); write the marked UNet and the key."""
    from .. import diffusion
    from ..diffusion import aiao

    spec = aiao.make_scheme(scheme)  # fail on a typo before any training
    device = check_device(device)
    unet = diffusion.load(model, device)
    if isinstance(spec, aiao.AIAO) and not spec.blocks:
        with err_console.status("profiling busy and lazy blocks"):
            lazy = aiao.profile(unet, diffusion.images("train", _classes(profile_classes)), device=device).lazy()
        spec = aiao.AIAO("+".join(lazy), spec.mask, spec.strength, spec.rows)
    with Progress(*PROGRESS_COLUMNS, console=err_console, transient=True) as bar:
        task = bar.add_task("embedding", total=steps)
        marked, key = aiao.embed(
            unet, spec, diffusion.images("train"), key_seed, steps=steps, lr=lr, device=device,
            progress=lambda i, loss: bar.update(task, completed=i, description=f"embedding (mark loss {loss:.3f})"),
        )  # fmt: skip
    diffusion.save(marked, out)
    key.save(key_path)
    console.print(f"wrote {out} and {key_path} ({key.scheme.spec()}); calibrate the key on clean UNets next")


@diffusion_app.command("calibrate")
def diffusion_calibrate(
    key_path: Annotated[Path, typer.Argument(help="The diffusion watermark key.")],
    clean: Annotated[list[Path], typer.Option("--null", "-n", help="A clean UNet folder (repeat, 2 or more).")],
    trials: Annotated[int, typer.Option("--trials", help="Monte Carlo trials per model.")] = 64,
    fpr: Annotated[float, typer.Option("--fpr", help="Target false-positive rate.")] = 0.01,
    device: DeviceOpt = "cpu",
) -> None:
    """Set the per-trial threshold and the clean success rates from UNets known not to carry the mark."""
    from ..diffusion import aiao

    key = aiao.calibrate(aiao.DiffusionKey.load(key_path), clean, trials=trials, target_fpr=fpr,
                         device=check_device(device))  # fmt: skip
    key.save(key_path)
    rates = ", ".join(f"{r:.3f}" for r in key.null_scores)
    console.print(f"calibrated {key_path}: trial threshold {key.threshold:.4f}, clean rates {rates}")


@diffusion_app.command("verify")
def diffusion_verify(
    key_path: Annotated[Path, typer.Argument(help="The diffusion watermark key.")],
    suspect: Annotated[Path, typer.Argument(help="The suspect UNet (diffusers folder, safetensors weights).")],
    trials: Annotated[int | None, typer.Option("--trials", help="Monte Carlo trials (default: the key's).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sampled trials.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Does SUSPECT carry the watermark? Exit code 0: yes, 1: no, 3: inconclusive, 2: error."""
    from ..diffusion import aiao

    key = aiao.DiffusionKey.load(key_path)
    v = aiao.verify(key, suspect, trials=trials, seed=seed, device=check_device(device))
    show_verdict(v, f"{suspect} vs {key_path}", as_json)
