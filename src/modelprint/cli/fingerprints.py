"""The fingerprint commands: extract, calibrate, verify, compare, schemes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import ConfigError
from .common import (
    ApiKeyOpt,
    CacheOpt,
    DeviceOpt,
    ModelArg,
    _ints,
    app,
    check_device,
    console,
    err_console,
    registry_table,
    show_verdict,
)


@app.command("extract")
def extract_cmd(
    model: ModelArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the fingerprint file.")],
    scheme: Annotated[
        str,
        typer.Option(
            "--scheme",
            "-s",
            help="Named scheme, sampler+representation+distance, or weights; embeddings or ranks for a text encoder.",
        ),
    ] = "AKH",
    data: Annotated[
        str, typer.Option("--data", "-d", help="Dataset the queries are drawn from (its test split).")
    ] = "digits",
    budget: Annotated[int, typer.Option("--budget", "-b", help="Number of queries.")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every random choice.")] = 0,
    reference: Annotated[
        list[str] | None,
        typer.Option("--reference", help="An independent model the sampler contrasts with (repeat; default: built)."),
    ] = None,
    surrogate: Annotated[
        list[str] | None,
        typer.Option("--surrogate", help="A copy extracted from the owner, for the sampler (repeat; default: built)."),
    ] = None,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Fingerprint the owner's MODEL and write the fingerprint file. Samplers that need reference models or
    surrogates (CAE, Divergent, FBI, Preference, ...) build them on the data unless given. A text encoder (minilm,
    or an encoder folder) takes --scheme embeddings or ranks: --budget probe sentences, as an embedding or a
    rerank API answers them."""
    from ..fingerprint import extract, make_scheme
    from ..lineage import resolve

    if scheme in ("embeddings", "ranks"):
        from ..transformer import embedding

        t0 = time.perf_counter()
        with err_console.status(f"asking {model} about {budget} probe sentences"):
            fp = embedding.extract(resolve(model, device=check_device(device)), scheme, queries=budget)
        fp.save(out)
        return console.print(f"wrote {out}: {fp.describe()} [{time.perf_counter() - t0:.1f}s]")

    if scheme.strip().lower() != "weights":
        make_scheme(scheme)  # fail on a typo before loading anything
    with err_console.status(f"extracting {scheme} fingerprint"):
        t0 = time.perf_counter()
        owner = resolve(model, cache_dir=cache, device=check_device(device))
        fp = extract(
            owner, scheme, data, budget, seed, references=reference or None, surrogates=surrogate or None,
            cache_dir=cache, device=device,
        )  # fmt: skip
        fp.save(out)
    console.print(f"wrote {out}: {fp.describe()} [{time.perf_counter() - t0:.1f}s]")


@app.command("calibrate")
def calibrate_cmd(
    fingerprint: Annotated[Path, typer.Argument(help="The fingerprint, or any evidence file (a watermark key, ...).")],
    null: Annotated[
        list[str],
        typer.Option("--null", "-n", help="A model unrelated to the owner (repeat), or 'auto' to build the null bank."),
    ],
    fpr: Annotated[float, typer.Option("--fpr", help="Target false-positive rate.")] = 0.05,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write here instead of in place.")] = None,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Score the fingerprint against unrelated models (or the null bank: --null auto trains, and caches, enough
    models of the owner's architecture and of others for a distribution-free decision at the FPR), fixing the
    threshold of verification. A watermark key or a diffusion watermark key is calibrated on clean models."""
    from .. import evidence
    from ..decide import needed
    from ..fingerprint import calibrate

    fp = evidence.load(fingerprint)
    check_device(device)
    kind = evidence.kind(fp)
    if kind == "watermark key":
        from .watermark import watermark_calibrate

        return watermark_calibrate(fingerprint, null, fpr, cache)
    if kind == "diffusion watermark key":
        from .diffusion import diffusion_calibrate

        return diffusion_calibrate(fingerprint, [Path(n) for n in null], fpr=fpr, device=device)
    if kind == "embedding fingerprint":
        with err_console.status("asking the independent encoders"):
            fp = evidence.calibrate(fp, null, fpr)
        fp.save(out or fingerprint)
        return console.print(f"calibrated on {len(null)} independent encoders; wrote {out or fingerprint}")
    if kind not in ("fingerprint", "weights fingerprint"):
        evidence.calibrate(fp, null, fpr)  # a kind without calibration says so
    nulls = "auto" if null == ["auto"] else null
    if "auto" in null and nulls != "auto":
        raise ConfigError("--null auto builds the whole null bank: give it alone")
    with err_console.status("scoring null models"):
        fp = calibrate(
            fp, nulls, fpr, cache_dir=cache, device=device, progress=lambda m: err_console.print(m, highlight=False)
        )
    fp.save(out or fingerprint)
    groups = fp.null.groups
    parts = [f"{name}: {g.n} models, threshold {g.threshold(fpr):.4f}" for name, g in groups.items()]
    console.print(f"calibrated on {len(fp.null_scores)} null models ({'; '.join(parts)}); wrote {out or fingerprint}")
    if len(fp.null_scores) < needed(fpr):
        console.print(
            f"note: {len(fp.null_scores)} null models give parametric p-values; {needed(fpr)} give distribution-free "
            "ones at this FPR (--null auto)"
        )


@app.command("verify")
def verify_cmd(
    fingerprint: Annotated[
        Path, typer.Argument(help="The (calibrated) fingerprint, or any evidence file (a watermark key, ...).")
    ],
    suspect: Annotated[
        str | None, typer.Argument(help="The suspect: a model file or folder, or a lineage expression.")
    ] = None,
    url: Annotated[
        str | None, typer.Option("--url", help="Query a suspect served over the Open Inference Protocol instead.")
    ] = None,
    model_name: Annotated[str, typer.Option("--model-name", help="The served model's name (with --url).")] = "model",
    api_key: ApiKeyOpt = None,
    output: Annotated[
        str, typer.Option("--output", help="What the endpoint answers: labels or probs (encoders: embeddings, ranks).")
    ] = "labels",
    sequential: Annotated[bool, typer.Option("--sequential", help="Stop as soon as the evidence is decisive.")] = False,
    alpha: Annotated[
        float | None, typer.Option("--alpha", help="FPR to decide at (default: the calibration's).")
    ] = None,
    delta: Annotated[
        float, typer.Option("--delta", help="Sequential: chance of deciding otherwise than the full run.")
    ] = 0.01,
    also: Annotated[
        list[Path] | None,
        typer.Option(
            "--and", help="Another evidence file of the same owner (repeat): one verdict from all, by --combine."
        ),
    ] = None,
    combine: Annotated[
        str,
        typer.Option(
            "--combine",
            help="How --and's p-values combine: holm (or bonferroni) and vote (a majority) hold however the schemes "
            "depend on each other; tippett, fisher and stouffer assume they are independent, which they are not.",
        ),
    ] = "holm",
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Is SUSPECT (or the model at --url) derived from the fingerprint's owner? With --and, one verdict from
    several fingerprints or keys (the queries of each are sent). Exit code 0: related, 1: not related,
    3: inconclusive, 2: error."""
    from .. import evidence
    from ..combination import COMBINERS

    if (suspect is None) == (url is None):
        raise ConfigError("give either a SUSPECT or --url (with --model-name)")
    if combine not in COMBINERS:
        raise ConfigError(f"unknown --combine {combine!r}: one of {', '.join(COMBINERS)}")
    files = [fingerprint, *(also or [])]
    evs = [evidence.load(f) for f in files]
    seals = [f for f, ev in zip(files, evs, strict=True) if evidence.kind(ev) == "integrity seal"]
    if seals and len(evs) > 1:
        raise ConfigError(f"{seals[0]}: a seal's check is deterministic, with no p-value to combine: check it alone")
    options = {
        **({"alpha": alpha} if alpha is not None else {}),
        **({"sequential": True, "delta": delta} if sequential else {}),
    }

    def judge(model, **kwargs):
        if len(evs) == 1:
            return evidence.verify(evs[0], model, **kwargs, **options)
        return evidence.verify_combined(evs, model, combine, **kwargs, **options)

    if url is not None:
        from ..remote import RemoteModel
        from ..transformer.serving import RemoteEncoder

        client = RemoteEncoder if output in ("embeddings", "ranks") else RemoteModel
        with err_console.status(f"querying {url}"), client(url, model_name, output, api_key=api_key) as remote:  # type: ignore[arg-type]
            v = judge(remote)
        suspect = f"{url} ({model_name})"
    else:
        v = judge(suspect, cache_dir=cache, device=check_device(device))
    show_verdict(v, f"{suspect} vs {' + '.join(map(str, files))}", as_json)


@app.command("compare")
def compare_cmd(
    model_a: Annotated[str, typer.Argument(help="The owner's checkpoint: a model file or folder, or an expression.")],
    model_b: Annotated[str, typer.Argument(help="The suspect checkpoint, same architecture (widths may differ).")],
    null: Annotated[
        list[str] | None,
        typer.Option(
            "--null", "-n", help="An independent model (repeat): of A's architecture but for gradients and cka."
        ),
    ] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="False-positive rate to decide at.")] = 0.01,
    input_shape: Annotated[
        str | None, typer.Option("--input-shape", help="e.g. 1,8,8, for networks that do not record it.")
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="matching: do the hidden units' incoming and outgoing weights agree on a correspondence; "
            "barrier: the loss barrier on the aligned linear path between the two; deepjudge: DeepJudge's layer "
            "metrics after alignment, majority vote; gradients (ModelGiF's gradient fields) and cka (CKA of the "
            "layers): across architectures; units, invariants and hidden-cka: transformers (vit, seqformer, "
            "text encoders). All but matching read --data (see modelprint schemes).",
        ),
    ] = "matching",
    data: Annotated[str, typer.Option("--data", help="Data the models answer (every method but matching).")] = "digits",
    plot: Annotated[
        Path | None, typer.Option("--plot", help="--method barrier: write the loss paths as an image.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    cache: CacheOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """White-box: is MODEL_B's checkpoint derived from MODEL_A's, through any permutation or rescaling of
    hidden units (or, with --method gradients or cka, in any architecture)? Exit code 0: related, 1: not related,
    3: inconclusive, 2: error."""
    from ..fingerprint.comparisons import COMPARISONS
    from ..fingerprint.connectivity import plot_paths
    from ..lineage import resolve

    if method not in COMPARISONS:
        raise ConfigError(f"--method must be one of {', '.join(COMPARISONS)}, not {method!r}")
    if plot and method != "barrier":
        raise ConfigError("--plot draws the loss paths of --method barrier")
    device = check_device(device)
    a, b = (resolve(m, cache_dir=cache, device=device) for m in (model_a, model_b))
    with err_console.status("aligning hidden units and calibrating on independent models"):
        shape = tuple(_ints(input_shape, "--input-shape")) if input_shape else None
        compare = COMPARISONS[method][0]
        v = compare(a, b, data, shape, null_models=null or None, alpha=alpha, cache_dir=cache, device=device)
    if plot:
        plot_paths(v.evidence, plot)
        err_console.print(f"loss paths: {plot}")
    show_verdict(v, f"{model_b} vs {model_a}", as_json)


@app.command("schemes")
def schemes_cmd() -> None:
    """List the named fingerprinting schemes and the components they combine, with the access each needs."""
    from ..fingerprint import DISTANCES, NAMED, REPRESENTATIONS, SAMPLERS, make_scheme
    from ..fingerprint.comparisons import COMPARISONS

    named = Table(title="named schemes")
    columns = ("scheme", "components", "owner at extraction", "access at verification", "sequential", "what",
               "deviation from the paper")  # fmt: skip
    for col in columns:
        named.add_column(col)
    for name, (_, what, deviation) in NAMED.items():
        s = make_scheme(name)
        access = "hard labels" if s.needs == "labels" else s.needs
        owner = "torch module (gradients)" if s.sampler.gradients else "any (its answers)"
        named.add_row(name, s.components, owner, access, "yes" if s.sequential else "", what, deviation)
    console.print(named)
    white = Table(title="white-box comparisons (modelprint compare --method)")
    for col in ("method", "what", "deviation from the paper"):
        white.add_column(col)
    for name, (_, what, deviation) in COMPARISONS.items():
        white.add_row(name, what, deviation)
    console.print(white)
    for title, reg in (("query samplers", SAMPLERS), ("representations", REPRESENTATIONS), ("distances", DISTANCES)):
        console.print(registry_table(title, reg))
    console.print("Combine any compatible parts: modelprint extract MODEL --scheme 'adversarial(eps=0.05)+ddv+cosine'")
