"""``modelprint backdoor``: does a model hide a backdoor? Scan it with a detector calibrated on clean models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import CacheOpt, DeviceOpt, ModelArg, check_device, console, err_console, registry_table, show_verdict

backdoor_app = typer.Typer(help="Does a model hide a backdoor? Scan it against clean models.", no_args_is_help=True)


@backdoor_app.command("scan")
def backdoor_scan(
    model: ModelArg,
    null: Annotated[list[str], typer.Option("--null", "-n", help="A clean model of the same task (repeat, 2+).")],
    data: Annotated[str, typer.Option("--data", "-d", help="Clean inputs of the task (a dataset name).")] = "digits",
    detector: Annotated[str, typer.Option("--detector", help="A detector spec (modelprint backdoor detectors).")] = (
        "neural-cleanse"
    ),
    alpha: Annotated[float, typer.Option("--alpha", help="False-positive rate on clean models.")] = 0.05,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write the reversed trigger and mask norms (PNG).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Does MODEL hide a backdoor? Runs the detector on MODEL and on every --null clean model and decides MODEL's
    score against theirs. Exit code 0: backdoored, 1: clean, 3: inconclusive, 2: error."""
    from ..integrity import backdoor

    device = check_device(device)
    with err_console.status(f"scanning {len(null)} clean models"):
        nulls = backdoor.scores(detector, null, data, cache_dir=cache, device=device)
    with err_console.status(f"scanning {model}"):
        v = backdoor.scan(model, data, detector, null_scores=nulls, alpha=alpha, cache_dir=cache, device=device)
    if plot is not None:
        write_plot(v.evidence, plot)
        err_console.print(f"wrote {plot}")
    mask = v.evidence.pop("mask", None)  # an image, not a number to read in a table
    if as_json and mask is not None:
        v.evidence["mask"] = mask
    show_verdict(v, f"{model} ({detector})", as_json)


@backdoor_app.command("detectors")
def backdoor_detectors() -> None:
    """The backdoor detectors with their parameters."""
    from ..integrity import DETECTORS

    console.print(registry_table("backdoor detectors", DETECTORS))


def write_plot(evidence: dict, path: Path) -> None:
    """The reversed trigger's mask for the flagged class beside every class's mask norm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    mask, norms = np.asarray(evidence["mask"], dtype=float), evidence["mask_norms"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
    shown = mask if mask.ndim == 2 else mask.reshape(1, -1)
    left.imshow(shown, cmap="magma", vmin=0, vmax=1, aspect="auto" if mask.ndim != 2 else "equal")
    left.set_title(f"reversed trigger mask, class {evidence['class']}")
    left.set_xticks([]), left.set_yticks([])
    colours = ["tab:red" if i == evidence["class"] else "tab:gray" for i in range(len(norms))]
    right.bar(range(len(norms)), norms, color=colours)
    right.set_xlabel("class"), right.set_ylabel("mask L1 norm"), right.set_title("smallest trigger per class")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
