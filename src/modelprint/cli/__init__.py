"""The ``modelprint`` command: a thin typer layer over the Python API, one module per command group."""

from __future__ import annotations

import os
import sys

import typer

from ..errors import ModelprintError
from . import changes, fingerprints, locking, serving  # noqa: F401  (their commands register on app)
from .backdoor import backdoor_app
from .bench import BLACK_BOX_SCHEMES, bench_app, summary_table
from .commitment import commitment_app
from .common import app, err_console
from .diffusion import diffusion_app
from .integrity import integrity_app
from .pol import pol_app
from .registry import registry_app
from .watermark import watermark_app
from .zoo import data_app, zoo_app

for sub, name in ((zoo_app, "zoo"), (data_app, "data"), (bench_app, "bench"), (diffusion_app, "diffusion"),
                  (registry_app, "registry"), (watermark_app, "watermark"), (integrity_app, "integrity"),
                  (backdoor_app, "backdoor"), (commitment_app, "commitment"), (pol_app, "pol")):  # fmt: skip
    app.add_typer(sub, name=name)

__all__ = ["BLACK_BOX_SCHEMES", "app", "main", "summary_table"]


def main() -> None:
    """Entry point: run the app, printing modelprint's own errors as one line instead of a traceback."""
    try:
        code = app(standalone_mode=False)  # a command's typer.Exit comes back as its return value here
    except ModelprintError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted (a benchmark run resumes where it stopped when run again)")
        sys.exit(130)
    except Exception as e:
        # usage errors (a missing argument, an unknown command): click's, or the copy of click newer typers ship
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(e.exit_code)
        if os.environ.get("MODELPRINT_DEBUG"):
            raise
        # a bug, not a verdict: exit 2 like any error (1 would read as "not related")
        err_console.print(
            f"[bold red]internal error:[/] {type(e).__name__}: {e} (please report it; MODELPRINT_DEBUG=1 shows where)",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
