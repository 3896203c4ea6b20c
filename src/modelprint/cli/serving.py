"""``modelprint serve``: a model over the Open Inference Protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import AccessError, ConfigError
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
    output: Annotated[
        str, typer.Option("--output", help="Answer labels or probs; a text encoder: embeddings or ranks.")
    ] = "labels",
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
    api_keys: Annotated[
        Path | None,
        typer.Option("--api-keys", help="File of 'NAME KEY' lines: clients must send Authorization: Bearer KEY."),
    ] = None,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Serve MODEL over the Open Inference Protocol (KServe V2 REST); access log as JSON lines on stderr.
    With --api-keys, the limit counts per key; without, per peer address."""
    import logging

    import uvicorn

    from ..access import Model, WhiteBox
    from ..lineage import resolve
    from ..serve import create_app, load_api_keys

    device = check_device(device)
    shape = _ints(input_shape, "--input-shape") if input_shape else None
    keys = load_api_keys(api_keys) if api_keys else None
    loaded = resolve(model, cache_dir=cache, device=device, **({"input_shape": shape} if shape else {}))
    from ..transformer.text import SentenceEncoder

    if isinstance(loaded, SentenceEncoder):
        if output not in ("embeddings", "ranks") or adaptive:
            raise ConfigError(f"{model} is a text encoder: serve it with --output embeddings or ranks (no --adaptive)")
        served = loaded
    else:
        served = loaded if isinstance(loaded, Model) else WhiteBox(loaded, input_shape=shape, device=device)
        try:
            _ = served.input_shape  # unknown for a file that does not record it
        except AccessError:
            raise ConfigError(f"{model}: the file does not record its input shape; give --input-shape") from None
    if adaptive:
        from .. import data
        from ..adaptive import Adaptive

        served = Adaptive(served, data.load(adaptive, "train").x, fpr=adaptive_fpr)
    app_ = create_app(served, name, output, limit=limit, api_keys=keys)  # type: ignore[arg-type]
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    console.print(f"serving {model} as {name} on http://{host}:{port}/v2/models/{name} (Ctrl-C stops)")
    if keys is None and host not in ("127.0.0.1", "localhost", "::1"):
        console.print("note: no --api-keys: anyone who reaches this address may query the model")
    uvicorn.run(app_, host=host, port=port, log_level="warning")
