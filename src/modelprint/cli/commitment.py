"""``modelprint commitment``: publish a commitment to a calibrated fingerprint at release; open it later; let anyone
check a suspect against what was committed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from .common import CacheOpt, DeviceOpt, check_device, console, err_console, show_verdict

commitment_app = typer.Typer(
    help="Commit to a fingerprint at release; open it later; anyone checks a suspect against it.", no_args_is_help=True
)
ChallengeOpt = Annotated[
    str | None, typer.Option("--challenge", help="The checker's challenge: it draws which queries are opened.")
]


@commitment_app.command("make")
def commitment_make(
    fingerprint: Annotated[Path, typer.Argument(help="A calibrated fingerprint (modelprint calibrate).")],
    public: Annotated[Path, typer.Option("--out", "-o", help="The commitment to publish.")],
    secret: Annotated[Path, typer.Option("--secret", help="The fingerprint with its salts: keep it private.")],
) -> None:
    """Commit to FINGERPRINT: write the public commitment (a Merkle root; it discloses nothing about the model)
    and the owner's secret that opens it."""
    from ..commitment import commit
    from ..fingerprint.file import Fingerprint

    fp = Fingerprint.load(fingerprint)
    if not isinstance(fp, Fingerprint):
        raise ConfigError(f"{fingerprint}: a commitment covers a black-box fingerprint (its queries and answers)")
    committed = commit(fp)
    committed.save(secret)
    committed.commitment.save(public)
    console.print(f"wrote {public} (publish it: {committed.commitment}) and {secret} (keep it private)")


@commitment_app.command("open")
def commitment_open(
    secret: Annotated[Path, typer.Argument(help="The owner's secret (commitment make --secret).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the opening.")],
    queries: Annotated[
        int | None, typer.Option("--queries", "-k", help="Open only this many, drawn by --challenge.")
    ] = None,
    challenge: ChallengeOpt = None,
) -> None:
    """Open the commitment for a checker: every query, or the --queries that the checker's --challenge draws."""
    from ..commitment import Committed

    opening = Committed.load(secret).open(queries, challenge)
    opening.save(out)
    console.print(f"wrote {out}: {len(opening.indices)} of {opening.budget} queries opened")


@commitment_app.command("check")
def commitment_check(
    commitment: Annotated[Path, typer.Argument(help="The published commitment.")],
    opening: Annotated[Path, typer.Argument(help="The owner's opening.")],
    suspect: Annotated[str, typer.Argument(help="The suspect: a model file or folder, or a lineage expression.")],
    challenge: ChallengeOpt = None,
    alpha: Annotated[float | None, typer.Option("--alpha", help="FPR (default: the committed one).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Does SUSPECT answer the opened queries like the committed owner? The opening must lead to the published
    root (and, when partial, open what --challenge draws). Exit code 0: related, 1: not related, 3: inconclusive,
    2: error (including an opening that does not match)."""
    from ..commitment import Commitment, Opening, check

    options = {"cache_dir": cache, "device": check_device(device), **({} if alpha is None else {"alpha": alpha})}
    with err_console.status(f"checking {suspect}"):
        v = check(Commitment.load(commitment), Opening.load(opening), suspect, challenge=challenge, **options)
    show_verdict(v, f"{suspect} vs {commitment}", as_json)
