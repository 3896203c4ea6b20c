"""``modelprint pol``: train with a proof of learning; verify a model's proof."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import ModelArg, accuracy_on_test, console, err_console, show_verdict

pol_app = typer.Typer(help="Proof of learning: train while recording the trace; verify a trace.",
                      no_args_is_help=True)  # fmt: skip


@pol_app.command("record")
def pol_record(
    arch: Annotated[str, typer.Argument(help="The architecture to train (modelprint's: mlp, cnn, lenet, ...).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the trained model.")],
    trace_path: Annotated[Path, typer.Option("--trace", help="Where to write the trace.")],
    data: Annotated[str, typer.Option("--data", "-d", help="A dataset (its train split).")] = "digits",
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs of plain SGD.")] = 20,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate.")] = 0.1,
    batch: Annotated[int, typer.Option("--batch", help="Examples per step.")] = 32,
    k: Annotated[int, typer.Option("--every", help="Steps between checkpoints.")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the initialisation, order and dropout.")] = 0,
) -> None:
    """Train ARCH on --data with plain SGD, recording the proof of learning: checkpoints every --every steps, the
    batches of every step, the hyperparameters."""
    from ..io import save_any
    from ..pol import record

    with err_console.status(f"training {arch} on {data} with a proof of learning"):
        model, trace = record(arch, data, epochs=epochs, lr=lr, batch=batch, k=k, seed=seed)
    save_any(model, out)
    trace.save(trace_path)
    console.print(f"wrote {out} (test accuracy {accuracy_on_test(model, data):.3f}) and {trace_path} "
                  f"({len(trace.checkpoints)} checkpoints, {len(trace.batches)} steps)")  # fmt: skip


@pol_app.command("verify")
def pol_verify(
    trace_path: Annotated[Path, typer.Argument(help="The trace (pol record --trace).")],
    model: ModelArg,
    top: Annotated[int, typer.Option("--top", help="Segments re-executed per epoch (the largest updates).")] = 1,
    tolerance: Annotated[float, typer.Option("--tolerance", help="Largest distance, relative to the update.")] = 0.01,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
) -> None:
    """Is TRACE a proof that MODEL was trained as it says? Re-executes the largest segments of every epoch. Exit
    code 0: valid, 1: invalid, 2: error."""
    from ..lineage import resolve
    from ..pol import Trace, verify

    with err_console.status("re-executing the trace's segments"):
        v = verify(Trace.load(trace_path), resolve(model), top=top, tolerance=tolerance)
    show_verdict(v, f"{model} vs {trace_path}", as_json)
