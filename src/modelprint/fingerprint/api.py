"""The fingerprinting workflow: ``extract`` a fingerprint from the owner, ``calibrate`` it on unrelated models,
``verify`` a suspect (optionally stopping as soon as the evidence is decisive)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import evidence
from ..access import BlackBox, Model, WhiteBox, architecture
from ..combination import check_method
from ..decide import check_alpha, decide, serfling_radius
from ..digest import module_digest
from ..errors import ConfigError
from ..verdict import Verdict
from .file import Fingerprint
from .helpers import Data, as_owner, held_out, helper_builders
from .matching import matching_agreement
from .queries import Context
from .schemes import Scheme, make_scheme
from .weights import WeightsFingerprint

Suspect = Model | nn.Module | Callable[[torch.Tensor], Any] | str | Path


def extract(
    owner: Model | nn.Module,
    scheme: str | Scheme = "AKH",
    data: Data = "digits",
    budget: int = 100,
    seed: int = 0,
    *,
    references: Sequence | None = None,
    surrogates: Sequence | None = None,
    cache_dir: str | Path | None | bool = None,
    device: str = "cpu",
) -> Fingerprint:
    """Fingerprint ``owner`` with ``scheme`` using ``budget`` queries drawn from ``data`` (a registered dataset's
    test split, a Dataset, or (x, y) tensors). Samplers that need reference models or surrogates take
    ``references``/``surrogates``, or build them with the lineage module on ``data`` (cached; tensors are split
    like a dataset): references trained on its train split, surrogates extracted from the owner's labels on its
    attacker split, which works for a black-box owner too (ONNX, a server) at the cost of those queries.
    ``scheme="weights"`` keeps the owner's weights instead, to test suspects' checkpoints (white-box)."""
    if isinstance(scheme, str) and scheme.strip().lower() == "weights":
        if not isinstance(owner, nn.Module):
            raise ConfigError("a weights fingerprint needs the owner as a torch module")
        return WeightsFingerprint.of(owner)
    scheme = make_scheme(scheme)
    scheme.sampler.check_budget(budget)
    x, y, name = held_out(data)
    model = as_owner(owner, x, device)
    scheme.check_access(model.output, "the owner")
    if model._input_shape is not None and model.input_shape != tuple(x.shape[1:]):
        raise ConfigError(f"the owner takes inputs of shape {model.input_shape}, the data has {tuple(x.shape[1:])}")
    if int(y.max()) >= model.num_classes:
        raise ConfigError(f"the data has labels up to {int(y.max())}, the owner only {model.num_classes} classes")
    refs, surr = helper_builders(model, name, references, surrogates, cache_dir, device)
    gen = torch.Generator().manual_seed(seed)
    queries = scheme.sampler.sample(Context(model, x, y, budget, gen, device, refs, surr))
    if len(queries.x) != budget:
        raise ConfigError(f"sampler {scheme.sampler.spec()} made {len(queries.x)} queries, not {budget}")
    responses = getattr(scheme.view(model), scheme.needs)(queries.x)
    return Fingerprint(
        scheme=scheme,
        queries=queries.x.float().contiguous(),
        responses=responses,
        num_classes=model.num_classes,
        budget=budget,
        seed=seed,
        dataset=name,
        unit=queries.unit,
        aux=queries.aux,
        owner_sha256=module_digest(model.module) if isinstance(model, WhiteBox) else None,
        owner_arch=architecture(model),
    )


def as_suspect(suspect: Suspect, fp: Fingerprint, cache_dir=None, device: str = "cpu") -> Model:
    """A suspect as a ``Model`` of the fingerprint's input shape (its classes may differ from the owner's: label
    and correlation schemes still compare them). A plain callable is taken to answer what the scheme needs
    (labels for hard-label schemes, probabilities otherwise)."""
    from ..lineage import resolve

    if isinstance(suspect, str | Path):
        suspect = resolve(suspect, cache_dir=cache_dir, device=device, input_shape=list(fp.input_shape))
    if isinstance(suspect, Model):
        return suspect
    if isinstance(suspect, nn.Module):  # its own number of classes: a transfer may have changed the label set
        return WhiteBox(suspect, input_shape=fp.input_shape, device=device)
    if callable(suspect):
        return BlackBox(suspect, "labels" if fp.scheme.needs == "labels" else "probs", input_shape=fp.input_shape)
    raise ConfigError(f"cannot use {type(suspect).__name__} as a suspect: expected a module, Model, callable or path")


def _white_box(suspect: Suspect, cache_dir, device: str) -> nn.Module:
    from ..lineage import resolve

    module = resolve(suspect, cache_dir=cache_dir, device=device) if isinstance(suspect, str | Path) else suspect
    if isinstance(module, WhiteBox):
        module = module.module
    if not isinstance(module, nn.Module):
        raise ConfigError("a weights fingerprint tests checkpoints: the suspect must be a torch module or model file")
    return module


def score(fp: Fingerprint, suspect: Suspect, cache_dir=None, device: str = "cpu") -> float:
    """The similarity of ``suspect`` to the owner on the fingerprint's queries (higher = more related)."""
    if isinstance(fp, WeightsFingerprint):
        return fp.similarity(_white_box(suspect, cache_dir, device))
    model = as_suspect(suspect, fp, cache_dir, device)
    out = getattr(fp.scheme.view(model, budget=fp.budget), fp.scheme.needs)(fp.queries)
    return fp.similarity(out)


def calibrate(
    fp: Fingerprint,
    null_models: Sequence[Suspect] | str = (),
    target_fpr: float = 0.05,
    *,
    null_scores: Sequence[float] | None = None,
    data: Data | None = None,
    cache_dir=None,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> Fingerprint:
    """``fp`` with a null distribution: its scores against models known to be unrelated to the owner (modules,
    files or lineage expressions), each kept with its architecture (its stratum), and the false-positive rate
    verification is held to. ``null_models="auto"`` builds the null bank (``modelprint.nullbank``): enough
    independent models for a distribution-free p-value at ``target_fpr``, trained on the fingerprint's dataset
    (or ``data``, the owner's training data as (x, y) tensors), of the owner's architecture and others. A model
    that scores like the owner itself (a copy) is refused."""
    check_alpha(target_fpr)
    scores = [] if null_scores is None else list(null_scores)  # (an array has no truth value)
    names, strata = [f"score:{s:.6g}" for s in scores], [""] * len(scores)
    if isinstance(null_models, str) and null_models == "auto":
        from .. import nullbank

        arch = getattr(fp, "owner_arch", None) or (fp.arch.get("arch") if isinstance(fp, WeightsFingerprint) else None)
        data = data if data is not None else getattr(fp, "dataset", None)
        if data is None:
            raise ConfigError("the null bank trains independent models: pass data= (the owner's training data)")
        bank = nullbank.build(
            data,
            target_fpr,
            arch,
            own_only=isinstance(fp, WeightsFingerprint),
            cache_dir=cache_dir,
            device=device,
            progress=progress,
        )
        null_models = [b.module for b in bank]
        given_names = [b.name for b in bank]
    elif isinstance(null_models, str | Path):
        raise ConfigError(f"null_models must be a list of models or 'auto', not {null_models!r}")
    else:
        given_names = [str(m) if isinstance(m, str | Path) else type(m).__name__ for m in null_models]
    for m, name in zip(null_models, given_names, strict=True):
        model = _resolve(m, fp, cache_dir, device)
        s = score(fp, model, cache_dir, device)
        _refuse_copy(fp, model, s, name)
        scores.append(s)
        names.append(name)
        strata.append(architecture(model) or "")
    if len(scores) < 2:
        raise ConfigError("calibration needs at least 2 unrelated models (more give a sharper threshold)")
    return fp.calibrated(np.array(scores), tuple(names), target_fpr, tuple(strata))


def _resolve(m: Suspect, fp, cache_dir, device: str):
    if isinstance(fp, WeightsFingerprint):
        return _white_box(m, cache_dir, device)
    return as_suspect(m, fp, cache_dir, device)


def _refuse_copy(fp, model, s: float, name: str) -> None:
    """A copy of the owner passed as a null model would make every suspect look unrelated: refuse it when its
    weights are the owner's, or when it reproduces the owner's continuous outputs exactly."""
    module = model.module if isinstance(model, WhiteBox) else model
    if isinstance(module, nn.Module) and fp.owner_sha256 and module_digest(module) == fp.owner_sha256:
        raise ConfigError(f"null model {name} has the owner's weights: a null model must be independent")
    if fp.scale.name != "rate" and s >= fp.self_score - 1e-9:
        raise ConfigError(
            f"null model {name} scores {s:.6g}, as the owner itself does: it looks like a copy of the owner, "
            "not an independent model"
        )


def verify(
    fp: Fingerprint,
    suspect: Suspect,
    *,
    alpha: float | None = None,
    sequential: bool = False,
    delta: float = 0.01,
    batch: int = 10,
    cache_dir=None,
    device: str = "cpu",
) -> Verdict:
    """Is ``suspect`` derived from the fingerprint's owner? Sends exactly the fingerprint's queries (hard labels
    only for hard-label schemes). The null is the stratum of the suspect's architecture when it is known (a
    white-box suspect), else the stratum hardest for it.

    With ``sequential``, queries go in batches of ``batch`` units and verification stops once a
    Hoeffding-Serfling bound puts the full-budget score on one side of the threshold. The reported score and
    p-value are then the bound's side nearest the threshold, so they hold for the full-budget score; the overall
    error of a sequential verdict is at most ``alpha + delta`` (the verdict says so)."""
    null = fp.null
    if null is None:
        raise ConfigError(
            "the fingerprint is not calibrated: calibrate it on independent models first (modelprint calibrate FP "
            "--null auto; calibrate(fp, 'auto')), or use score() for the raw similarity"
        )
    alpha = fp.target_fpr if alpha is None else alpha
    check_alpha(alpha)
    owner = {"owner_stratum": fp.owner_arch}
    if isinstance(fp, WeightsFingerprint):
        if sequential:
            raise ConfigError("a weights fingerprint sends no queries: sequential verification does not apply")
        module = _white_box(suspect, cache_dir, device)
        s, layers = matching_agreement(fp.owner, module, fp.input_shape)
        return decide(s, null, alpha, queries=0, scheme=fp.label, stratum=architecture(module), layers=layers, **owner)
    model = as_suspect(suspect, fp, cache_dir, device)
    owner["stratum"] = architecture(model)
    view = fp.scheme.view(model, budget=fp.budget)
    ask = getattr(view, fp.scheme.needs)
    if not sequential:
        s = fp.similarity(ask(fp.queries))
        return decide(s, null, alpha, queries=view.queries, scheme=fp.scheme.label, **owner)
    if not fp.scheme.sequential:
        raise ConfigError(
            f"scheme {fp.scheme.label} cannot stop early: its score is not a mean over queries "
            "(sequential verification works with label-agreement schemes: AKH, IPGuard, CAE, ...)"
        )
    if not 0 < delta < 1 or batch < 1:
        raise ConfigError(f"need 0 < delta < 1 and batch >= 1, got delta={delta}, batch={batch}")
    units = fp.budget // fp.unit
    order = torch.randperm(units, generator=torch.Generator().manual_seed(fp.seed))
    looks, reachable = math.ceil(units / batch), math.isfinite(null.threshold(alpha, owner["stratum"]))

    def significant(s: float) -> bool:  # decided as decide will (a count-scaled score is rounded, not compared)
        return null.p_value(s, owner["stratum"], alpha) <= alpha

    sims: list[torch.Tensor] = []
    for look in range(looks):
        idx = order[look * batch : (look + 1) * batch]
        q = (idx[:, None] * fp.unit + torch.arange(fp.unit)).flatten()
        sims.append(fp.scheme.unit_similarity(fp.responses[q], ask(fp.queries[q]), fp.num_classes))
        done = torch.cat(sims)
        mean, radius = float(done.double().mean()), serfling_radius(len(done), units, looks, delta)
        low, high = min(max(mean - radius, 0.0), 1.0), min(mean + radius, 1.0)
        if reachable and (significant(low) or not significant(high)):
            break  # (an unreachable threshold decides nothing early: the verdict will say inconclusive)
    # the full-budget score lies in [low, high] with probability 1 - delta: report the end that makes the weaker
    # claim, so the p-value is valid for the full budget
    bound = low if significant(low) else high
    return decide(
        bound,
        null,
        alpha,
        queries=view.queries,
        scheme=fp.scheme.label,
        warnings=[f"sequential: stopped early; the overall error is at most alpha + delta = {alpha + delta:g}"]
        if radius > 0
        else [],
        sequential={
            "looks": look + 1,
            "of_looks": looks,
            "delta": delta,
            "overall_error": alpha + delta if radius > 0 else alpha,
            "partial_score": mean,
            "radius": radius,
            "queries_saved": fp.budget - view.queries,
        },
        **owner,
    )


def verify_combined(
    fps: Sequence[Fingerprint],
    suspect: Suspect,
    *,
    method: str = "holm",
    alpha: float | None = None,
    cache_dir=None,
    device: str = "cpu",
) -> Verdict:
    """One verdict from several calibrated fingerprints of the same owner: their p-values combined by ``holm``
    or ``bonferroni`` (the smallest p-value times their number: decisive when any one scheme is, valid however the
    schemes depend on each other), ``vote`` (a majority of the schemes must be decisive, DeepJudge's judge, also
    valid under any dependence), or ``tippett``, ``fisher`` or ``stouffer``, which assume independent tests:
    fingerprints sharing a suspect and null models are positively dependent, so these overstate the evidence
    (the verdict says so). The score is -log10 of the combined p-value."""
    if not fps:
        raise ConfigError("verify_combined needs at least one fingerprint")
    check_method(method)  # before the suspect is resolved (a lineage expression may train a model)
    alpha = fps[0].target_fpr if alpha is None else alpha
    check_alpha(alpha)
    model = as_suspect(suspect, fps[0], cache_dir, device)  # resolved once for every fingerprint
    return evidence.verify_combined(fps, model, method, alpha, cache_dir=cache_dir, device=device)
