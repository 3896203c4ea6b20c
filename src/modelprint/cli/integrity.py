"""``modelprint integrity``: seal the released model; check that a served one is exactly it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import ApiKeyOpt, CacheOpt, DeviceOpt, ModelArg, check_device, console, err_console, show_verdict

integrity_app = typer.Typer(help="Is the served model exactly the released one? Seal it; check suspects.",
                            no_args_is_help=True)  # fmt: skip


@integrity_app.command("seal")
def integrity_seal(
    model: ModelArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the seal.")],
    data: Annotated[str, typer.Option("--data", "-d", help="Dataset the samples grow from (its test split).")] = (
        "digits"
    ),
    budget: Annotated[int, typer.Option("--budget", "-b", help="Number of sensitive samples.")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the samples' choice.")] = 0,
    tolerance: Annotated[float, typer.Option("--tolerance", help="Largest benign log-probability change.")] = 1e-4,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Seal the released MODEL: its answers on sensitive samples (SSF, He et al. 2019)."""
    from ..integrity import seal
    from ..lineage import resolve

    device = check_device(device)
    with err_console.status("growing sensitive samples"):
        sealed = seal(resolve(model, cache_dir=cache, device=device), data, budget, seed, tolerance=tolerance,
                      device=device)  # fmt: skip
        sealed.save(out)
    console.print(f"wrote {out}: {sealed!r}")


@integrity_app.command("check")
def integrity_check(
    seal_path: Annotated[Path, typer.Argument(help="The seal file.")],
    suspect: Annotated[str | None, typer.Argument(help="The suspect: a model file or folder, or an expression.")] = (
        None
    ),
    url: Annotated[str | None, typer.Option("--url", help="A suspect served over the Open Inference Protocol.")] = None,
    model_name: Annotated[str, typer.Option("--model-name", help="The served model's name (with --url).")] = "model",
    output: Annotated[str, typer.Option("--output", help="What the endpoint answers: labels or probs.")] = "probs",
    api_key: ApiKeyOpt = None,
    tolerance: Annotated[float | None, typer.Option("--tolerance", help="Override the seal's tolerance.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Is SUSPECT (or the model at --url) exactly the sealed model? Exit code 0: identical, 1: modified,
    2: error."""
    from ..errors import ConfigError
    from ..integrity import Seal, check

    if (suspect is None) == (url is None):
        raise ConfigError("give either a SUSPECT or --url (with --model-name)")
    sealed = Seal.load(seal_path)
    if url is not None:
        from ..remote import RemoteModel

        with RemoteModel(url, model_name, output, api_key=api_key) as remote:  # type: ignore[arg-type]
            v = check(sealed, remote, tolerance=tolerance)
        suspect = f"{url} ({model_name})"
    else:
        v = check(sealed, suspect, tolerance=tolerance, cache_dir=cache, device=check_device(device))
    show_verdict(v, f"{suspect} vs {seal_path}", as_json)
