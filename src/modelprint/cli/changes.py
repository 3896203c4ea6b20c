"""``modelprint diff``: where two models' answers differ, described in words and a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .common import CacheOpt, DeviceOpt, app, check_device, console, err_console


@app.command("diff")
def diff_cmd(
    model_a: Annotated[str, typer.Argument(help="A model: a file or folder, or a lineage expression.")],
    model_b: Annotated[str, typer.Argument(help="The model to compare with it (any architecture, same classes).")],
    data: Annotated[
        str, typer.Option("--data", help="Data whose held-out split (and blends of it) they answer.")
    ] = "digits",
    blends: Annotated[
        int, typer.Option("--blends", min=0, help="Mixup/CutMix blends of the data to probe too.")
    ] = 4000,
    depth: Annotated[
        int, typer.Option("--depth", min=1, max=8, help="Depth of the decision tree that describes where.")
    ] = 3,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write the changes as an image (png, svg, pdf).")] = None,
    tree: Annotated[bool, typer.Option("--tree", help="Print the whole decision tree too.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the changes as JSON.")] = False,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """What changed between MODEL_A and MODEL_B? Which of A's answers B changes, into what, and where in the
    input (a small decision tree over blocks of pixels, windows of a signal, or the features of tabular data)."""
    from ..changes import what_changed
    from ..lineage import resolve

    device = check_device(device)
    a, b = (resolve(m, cache_dir=cache, device=device) for m in (model_a, model_b))
    with err_console.status("asking both models and describing where they differ"):
        changes = what_changed(a, b, data, blends=blends, depth=depth)
    if plot:
        changes.plot(plot)
        err_console.print(f"plot: {plot}")
    if as_json:
        out = {
            "inputs": changes.inputs,
            "natural": changes.natural,
            "disagree_natural": changes.disagree_natural,
            "disagree_blends": changes.disagree_blends,
            "transitions": [{"a": a, "b": b, "inputs": n} for a, b, n in changes.transitions],
            "by_class": changes.by_class,
            "rules": [
                {"conditions": list(r.conditions), "inputs": r.inputs, "disagree": r.disagree} for r in changes.rules
            ],
            "tree": changes.tree,
        }
        console.print_json(json.dumps(out))
        return
    console.print(f"[bold]{model_b}[/] vs [bold]{model_a}[/] on {data}", highlight=False)
    console.print(changes.report(), highlight=False)
    if tree and changes.tree:
        console.print(changes.tree, highlight=False)
