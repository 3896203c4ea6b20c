"""``modelprint serve``: a model over the Open Inference Protocol."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import (
    CacheOpt,
    DeviceOpt,
    ModelArg,
    _ints,
    app,
    check_device,
    console,
)


@app.command("serve")
def serve_cmd(
    model: ModelArg,
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on (0.0.0.0 for all).")] = "127.0.0.1",
    name: Annotated[str, typer.Option("--name", help="The model's name in the URL.")] = "model",
    output: Annotated[str, typer.Option("--output", help="Answer labels or probs.")] = "labels",
    limit: Annotated[int | None, typer.Option("--limit", help="Queries allowed per client.")] = None,
    input_shape: Annotated[
        str | None, typer.Option("--input-shape", help="e.g. 1,8,8, for files that do not record it.")
    ] = None,
    adaptive: Annotated[
        str | None,
        typer.Option("--adaptive", help="Answer queries unlike this dataset's train split at random (a defence)."),
    ] = None,
    adaptive_fpr: Annotated[
        float, typer.Option("--adaptive-fpr", help="Share of genuine inputs the defence may flag.")
    ] = 0.05,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Serve MODEL over the Open Inference Protocol (KServe V2 REST); access log as JSON lines on stderr."""
    import logging

    import uvicorn

    from ..access import WhiteBox
    from ..lineage import resolve
    from ..serve import create_app

    device = check_device(device)
    shape = _ints(input_shape, "--input-shape") if input_shape else None
    served = WhiteBox(resolve(model, cache_dir=cache, device=device), input_shape=shape, device=device)
    if adaptive:
        from .. import data
        from ..adaptive import Adaptive

        served = Adaptive(served, data.load(adaptive, "train").x, fpr=adaptive_fpr)
    app_ = create_app(served, name, output, limit=limit)  # type: ignore[arg-type]
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    console.print(f"serving {model} as {name} on http://{host}:{port}/v2/models/{name} (Ctrl-C stops)")
    uvicorn.run(app_, host=host, port=port, log_level="warning")
