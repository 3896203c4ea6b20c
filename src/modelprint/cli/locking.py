"""``modelprint lock`` / ``unlock``: release a model that is useless without the owner's key (AdvParams)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import CacheOpt, DeviceOpt, ModelArg, accuracy_on_test, app, check_device, console, err_console

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Where to write the model (a folder, or a file for yours).")]
KeyOpt = Annotated[Path, typer.Option("--key", "-k", help="The lock key file.")]


@app.command("lock")
def lock_cmd(
    model: ModelArg,
    out: OutOpt,
    key: KeyOpt,
    data: Annotated[str, typer.Option("--data", "-d", help="The owner's data (its train split guides the search).")] = (
        "digits"
    ),
    target: Annotated[
        float | None, typer.Option("--target", help="Accuracy to fall to (default: twice chance).")
    ] = None,
    epsilon: Annotated[float, typer.Option("--epsilon", help="Each move, times its layer's largest weight.")] = 0.5,
    limit: Annotated[int, typer.Option("--limit", help="Most weights to move.")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the examples that guide the search.")] = 0,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Lock MODEL: move a few weights adversarially until it is useless (AdvParams); write the locked model to
    --out and the key that restores it to --key (keep the key private)."""
    from ..io import save_any
    from ..lineage import resolve
    from ..locking import lock

    device = check_device(device)
    owner = resolve(model, cache_dir=cache, device=device)
    with err_console.status("searching the weights to move"):
        locked, secret = lock(owner, data, target=target, epsilon=epsilon, limit=limit, seed=seed, device=device)
    written = save_any(locked, out, meta={"locked": True})
    secret.save(key)
    before, after = (accuracy_on_test(m, data, device) for m in (owner, locked))
    console.print(f"wrote {written} and {key}: {len(secret)} weights moved; test accuracy {before:.3f} -> {after:.3f}")


@app.command("unlock")
def unlock_cmd(model: ModelArg, out: OutOpt, key: KeyOpt, cache: CacheOpt = None) -> None:
    """Restore a locked MODEL with its --key (refused when the key is not this model's); write it to --out."""
    from ..io import save_any
    from ..lineage import resolve
    from ..locking import LockKey, unlock

    restored = unlock(resolve(model, cache_dir=cache), LockKey.load(key))
    console.print(f"wrote {save_any(restored, out)}")
