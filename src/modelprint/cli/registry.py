"""``modelprint registry``: which known model is a suspect derived from?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import ConfigError
from .common import (
    ApiKeyOpt,
    CacheOpt,
    _plain,
    console,
)

registry_app = typer.Typer(
    help="A database of known models: which one is a suspect derived from?", no_args_is_help=True
)


RegistryOpt = Annotated[
    str,
    typer.Option(
        "--db", envvar="MODELPRINT_REGISTRY", help="A SQLite file or a database URL (e.g. postgresql+psycopg://...)."
    ),
]


@registry_app.command("add")
def registry_add(
    item: Annotated[
        str,
        typer.Argument(help="An evidence file (fingerprint, watermark key), or a model (file, folder, expression)."),
    ],
    name: Annotated[str, typer.Option("--name", help="The registered model's name (repeat adds to it).")],
    meta: Annotated[list[str], typer.Option("--meta", help="key=value metadata (repeat).")] = [],  # noqa: B006
    db: RegistryOpt = "modelprint-registry.db",
    cache: CacheOpt = None,
) -> None:
    """Register a model's weight signature, or one of its fingerprints or watermark keys, under NAME."""
    from .. import evidence
    from ..errors import FileFormatError
    from ..lineage import resolve
    from ..registry import Registry

    pairs = dict(m.split("=", 1) for m in meta if "=" in m)
    if len(pairs) != len(meta):
        raise ConfigError("--meta takes key=value")
    registry = Registry(db)
    try:
        what = evidence.kind(evidence.load(item))
        registry.add(name, fingerprints=[item], meta=pairs)
    except FileFormatError:
        if Path(item).is_file() and Path(item).suffix in (".fp", ".mpf"):
            raise
        registry.add(name, model=resolve(item, cache_dir=cache), meta=pairs)
        what = "weight signature"
    console.print(f"registered the {what} of {item} as {name!r} in {registry.url} ({len(registry)} models)")


@registry_app.command("list")
def registry_list(db: RegistryOpt = "modelprint-registry.db") -> None:
    """The registered models."""
    from ..registry import Registry

    table = Table("name", "signature", "fingerprints", "created", "meta")
    for e in Registry(db).entries():
        signature = "yes" if e["signature"] else ""
        table.add_row(e["name"], signature, str(e["fingerprints"]), e["created"], _plain(e["meta"]))
    console.print(table)


@registry_app.command("search")
def registry_search(
    suspect: Annotated[str | None, typer.Argument(help="A model file, folder or lineage expression.")] = None,
    url: Annotated[str | None, typer.Option("--url", help="A suspect served over the Open Inference Protocol.")] = None,
    model_name: Annotated[str, typer.Option("--model-name", help="The served model's name (with --url).")] = "model",
    api_key: ApiKeyOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", help="How many candidates to show.")] = 5,
    first_cut: Annotated[int, typer.Option("--first-cut", help="Nearest signatures verified in full.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print the matches as JSON.")] = False,
    db: RegistryOpt = "modelprint-registry.db",
    cache: CacheOpt = None,
) -> None:
    """Which registered models is SUSPECT derived from? Ranked by p-value. Exit code 0: at least one related."""
    from ..registry import Registry

    if (suspect is None) == (url is None):
        raise ConfigError("give either a SUSPECT or --url (with --model-name)")
    registry = Registry(db)
    if url is not None:
        from ..remote import RemoteModel

        with RemoteModel(url, model_name, api_key=api_key) as remote:
            matches = registry.search(remote, top_k=top_k)
    else:
        matches = registry.search(suspect, top_k=top_k, first_cut=first_cut, cache_dir=cache)
    rows = [
        {"name": m.name, "related": bool(m.verdict and m.verdict.related), "p_value": m.p_value,
         "distance": m.distance, "scheme": m.verdict.scheme if m.verdict else None}
        for m in matches
    ]  # fmt: skip
    if as_json:
        console.print_json(json.dumps(rows))
    else:
        table = Table("rank", "name", "related", "p-value", "signature distance", "scheme")
        for i, r in enumerate(rows, 1):
            distance = "" if r["distance"] is None else f"{r['distance']:.4g}"
            table.add_row(str(i), r["name"], "RELATED" if r["related"] else "", f"{r['p_value']:.3g}", distance,
                          r["scheme"] or "(no fingerprint)")  # fmt: skip
        console.print(table)
    raise typer.Exit(0 if any(r["related"] for r in rows) else 1)
