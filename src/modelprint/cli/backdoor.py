"""``modelprint backdoor``: does a model hide a backdoor? Scan it with a detector calibrated on clean models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import (
    CacheOpt,
    DeviceOpt,
    ModelArg,
    check_device,
    console,
    err_console,
    registry_table,
    show_verdict,
    write_csv,
)

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
    finish(v, plot, f"{model} ({detector})", as_json)


def finish(v, plot: Path | None, title: str, as_json: bool) -> None:
    """Write the plot if asked, then show the verdict (the mask only in JSON: an image, not a number to read)."""
    if plot is not None:
        write_plot(v.evidence, plot)
        err_console.print(f"wrote {plot}")
    mask = v.evidence.pop("mask", None)
    if as_json and mask is not None:
        v.evidence["mask"] = mask
    show_verdict(v, title, as_json)


@backdoor_app.command("diff")
def backdoor_diff(
    trusted: Annotated[str, typer.Argument(help="The trusted model (a file, folder or expression).")],
    suspect: Annotated[str, typer.Argument(help="The suspect derived from it.")],
    data: Annotated[str, typer.Option("--data", "-d", help="Clean inputs of the task (a dataset name).")] = "digits",
    detector: Annotated[str, typer.Option("--detector", help="A detector spec (modelprint backdoor detectors).")] = (
        "neural-cleanse"
    ),
    largest: Annotated[float, typer.Option("--largest", help="Largest trigger, a fraction of the input.")] = 0.25,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write the trigger found and mask norms (PNG).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Does SUSPECT hide a backdoor that TRUSTED does not? Searches the smallest trigger that sends SUSPECT to a
    class while TRUSTED keeps its answers. Exit code 0: backdoored (a trigger found), 1: clean, 2: error."""
    from ..integrity import backdoor

    with err_console.status(f"searching triggers {suspect} obeys and {trusted} does not"):
        v = backdoor.diff(trusted, suspect, data, detector, largest=largest, cache_dir=cache,
                          device=check_device(device))  # fmt: skip
    finish(v, plot, f"{suspect} vs {trusted} ({detector})", as_json)


@backdoor_app.command("strip")
def backdoor_strip(
    model: ModelArg,
    inputs: Annotated[Path, typer.Argument(help="Inputs to screen: an .npz file with an array x (or one array).")],
    data: Annotated[str, typer.Option("--data", "-d", help="Clean held-out inputs of the task (a dataset).")] = (
        "digits"
    ),
    alpha: Annotated[float, typer.Option("--alpha", help="Rate at which clean inputs are flagged.")] = 0.05,
    clean: Annotated[int, typer.Option("--clean", help="Clean inputs scored as the null.")] = 200,
    overlays: Annotated[int, typer.Option("--overlays", help="Clean inputs each input is mixed with.")] = 32,
    csv: Annotated[Path | None, typer.Option("--csv", help="Write every input's score and p-value.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Do INPUTS carry a backdoor trigger of MODEL? STRIP mixes each input with clean ones: a triggered input keeps
    its answer (low entropy). Inputs are flagged against clean inputs' entropies; the batch is called backdoored
    when more are flagged than clean inputs would be. Exit code 0: backdoored, 1: clean, 3: inconclusive, 2: error."""
    from ..data.local import read_inputs
    from ..integrity.strip import strip

    x = read_inputs(inputs)
    with err_console.status(f"screening {len(x)} inputs with STRIP"):
        screening = strip(model, x, data, overlays=overlays, clean=clean, cache_dir=cache,
                          device=check_device(device))  # fmt: skip
    if csv is not None:
        pairs = zip(screening.scores.tolist(), screening.p_values.tolist(), strict=True)
        write_csv([{"input": i, "score": s, "p_value": p} for i, (s, p) in enumerate(pairs)], csv)
        err_console.print(f"wrote {csv}")
    show_verdict(screening.verdict(alpha), f"{inputs.name} on {model} (STRIP)", as_json)


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
