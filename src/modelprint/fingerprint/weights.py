"""White-box weight-space tools that see through network symmetries: Git Re-Basin weight matching
(Ainsworth et al., ICLR 2023), equi-normalisation of positive ReLU rescaling, and linear CKA between layer
activations. The permutation structure comes from ``modelprint.symmetry`` (derived from the module graph)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from ..access import architecture
from ..decide import Null, Scale
from ..errors import ConfigError
from ..symmetry import PRODUCERS, Group, apply_permutation, apply_scaling, permutation_groups


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters()) | dict(model.named_buffers())


def _unit_rows(group: Group, state: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Every tensor the group's permutation touches, as (units, features) matrices with one row per unit."""
    n, rows = group.size, []
    for name, _ in group.producers:
        rows.append(state[name].detach().reshape(n, -1))
    for name in group.norms:
        t = state[name].detach()
        if t.ndim == 1 and len(t) == n and t.is_floating_point():
            rows.append(t.reshape(n, 1))
    for name, block in group.consumers:
        w = state[name].detach()
        w = w.reshape(w.shape[0], n, block, *w.shape[2:]).transpose(0, 1)
        rows.append(w.reshape(n, -1))
    return rows


def _check_same_structure(a: nn.Module, b: nn.Module) -> None:
    sa = {k: tuple(v.shape) for k, v in a.state_dict().items()}
    sb = {k: tuple(v.shape) for k, v in b.state_dict().items()}
    if sa != sb:
        diff = sorted(set(sa.items()) ^ set(sb.items()))[:3]
        raise ConfigError(f"weight matching needs two models of the same architecture; they differ at {diff}")


@torch.no_grad()
def match_weights(
    model_a: nn.Module, model_b: nn.Module, input_shape: tuple[int, ...], max_iter: int = 50, seed: int = 0
) -> tuple[nn.Module, dict[int, np.ndarray]]:
    """Git Re-Basin weight matching: a copy of ``model_b`` with its hidden units permuted to align with
    ``model_a`` (maximising the summed inner products of every tensor each permutation touches, one
    permutation at a time by linear assignment, until a full pass changes nothing), and the permutation of each
    group (``perm[i]`` is the unit of ``model_b`` matched to unit ``i`` of ``model_a``)."""
    _check_same_structure(model_a, model_b)
    groups = [g for g in permutation_groups(model_a, input_shape) if g.permutable]
    aligned = copy.deepcopy(model_b).float()
    sa, sb = _state(copy.deepcopy(model_a).float()), _state(aligned)
    perms = {i: np.arange(g.size) for i, g in enumerate(groups)}
    rng = np.random.default_rng(seed)
    for _ in range(max_iter):
        changed = False
        for i in rng.permutation(len(groups)):
            g = groups[i]
            cost = sum(ra.double() @ rb.double().T for ra, rb in zip(_unit_rows(g, sa), _unit_rows(g, sb), strict=True))
            _, perm = linear_sum_assignment(cost.numpy(), maximize=True)
            if (perm != np.arange(g.size)).any():
                changed = True
                apply_permutation(aligned, g, torch.as_tensor(perm))
                perms[i] = perms[i][perm]
        if not changed:
            break
    return aligned, perms


@torch.no_grad()
def equinormalize(model: nn.Module, input_shape: tuple[int, ...], iters: int = 100, tol: float = 1e-7) -> nn.Module:
    """A copy of ``model`` with every rescalable ReLU unit balanced (incoming and outgoing weight norms equal),
    the unique point of its rescaling orbit with the least total squared norm: two models that differ only by
    positive rescaling become identical."""
    out = copy.deepcopy(model).float()
    groups = [g for g in permutation_groups(out, input_shape) if g.permutable and g.rescalable and g.consumers]
    state = dict(out.named_parameters())
    for _ in range(iters):
        worst = 0.0
        for g in groups:
            incoming = sum(state[n].reshape(g.size, -1).pow(2).sum(1) for n in g.scale_targets)
            outgoing = sum(state[n].reshape(state[n].shape[0], g.size, -1).pow(2).sum((0, 2)) for n, _ in g.consumers)
            scale = (outgoing.clamp_min(1e-30) / incoming.clamp_min(1e-30)).pow(0.25)
            worst = max(worst, float((scale.log()).abs().max()))
            apply_scaling(out, g, scale)
        if worst < tol:
            break
    return out


def layer_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The output of every Linear/Conv layer of ``model`` on ``x``, one (samples, features) matrix each."""
    acts: list[torch.Tensor] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, o: acts.append(o.detach().float().flatten(1)))
        for m in model.modules()
        if isinstance(m, PRODUCERS)
    ]
    try:
        with torch.no_grad():
            was = model.training
            model.eval()
            model(x.to(next(model.parameters()).dtype))
            model.train(was)
    finally:
        for h in hooks:
            h.remove()
    return acts


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) between two activation matrices over the same samples: invariant to
    orthogonal maps and isotropic scaling of either side, so to permutations of units and to architecture."""
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    num = (x.T @ y).pow(2).sum()
    den = (x.T @ x).pow(2).sum().sqrt() * (y.T @ y).pow(2).sum().sqrt()
    return float(num / den) if den > 0 else 0.0


def cka_matrix(model_a: nn.Module, model_b: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Linear CKA between every layer output of ``model_a`` (rows) and of ``model_b`` (columns) on ``x``."""
    la, lb = layer_outputs(model_a, x), layer_outputs(model_b, x)
    return np.array([[linear_cka(a, b) for b in lb] for a in la])


# --- an independence test on matched weights ----------------------------------------------------------------


def _cosine_match(fa: torch.Tensor, fb: torch.Tensor) -> np.ndarray:
    """For each row of ``fa``, the row of ``fb`` matched to it by cosine similarity and linear assignment
    (-1 where ``fb`` has fewer rows than ``fa`` and no partner is left)."""
    fa = torch.nn.functional.normalize(fa.double(), dim=1)
    fb = torch.nn.functional.normalize(fb.double(), dim=1)
    rows, cols = linear_sum_assignment((fa @ fb.T).numpy(), maximize=True)
    m = np.full(len(fa), -1)
    m[rows] = cols
    return m


def _take(t: torch.Tensor, axis: int, m: np.ndarray, block: int) -> torch.Tensor:
    """``t`` with the units of ``axis`` (``block`` entries each) reordered by matching ``m``; unmatched
    units (``-1``) become zeros, so widths may differ."""
    idx = torch.as_tensor(np.clip(m, 0, None))
    out = t.index_select(axis, (idx[:, None] * block + torch.arange(block)[None, :]).reshape(-1))
    if (m < 0).any():
        mask = torch.as_tensor(np.repeat(m >= 0, block), dtype=out.dtype)
        out = out * mask.view(*([1] * axis), -1, *([1] * (t.ndim - axis - 1)))
    return out


def _matchings(groups_a, groups_b, sa, sb, side: str) -> dict[int, np.ndarray]:
    """Match every group's units from one side only: ``in`` from the weights that create the units (their
    inputs aligned by already-matched groups, starting at the data), ``out`` from the weights that read them
    (their outputs aligned likewise, starting at the logits)."""
    out_group = {n: k for k, g in enumerate(groups_a) for n, _ in g.producers}
    in_group = {n: (k, b) for k, g in enumerate(groups_a) for n, b in g.consumers}
    done = {k: np.arange(g.size) for k, g in enumerate(groups_a) if not g.permutable}  # data, logits, 1-unit
    progress = True
    while progress:
        progress = False
        for k, (ga, gb) in enumerate(zip(groups_a, groups_b, strict=True)):
            if k in done:
                continue
            feats_a, feats_b = [], []
            if side == "in":
                for name, _ in ga.producers:
                    wa, wb = sa[name].detach(), sb[name].detach()
                    if wa.ndim > 1 and name in in_group:
                        src, block = in_group[name]
                        if src not in done:
                            continue
                        wb = _take(wb, 1, done[src], block)
                    feats_a.append(wa.reshape(ga.size, -1))
                    feats_b.append(wb.reshape(gb.size, -1))
            else:
                for name, _ in ga.consumers:
                    dst = out_group.get(name)
                    if dst is None or dst not in done:
                        continue
                    wa, wb = sa[name].detach(), _take(sb[name].detach(), 0, done[dst], 1)
                    feats_a.append(wa.reshape(wa.shape[0], ga.size, -1).transpose(0, 1).reshape(ga.size, -1))
                    feats_b.append(wb.reshape(wb.shape[0], gb.size, -1).transpose(0, 1).reshape(gb.size, -1))
            if any(f.shape[1] > 1 for f in feats_a):  # at least one weight, not only biases
                done[k] = _cosine_match(torch.cat(feats_a, 1), torch.cat(feats_b, 1))
                progress = True
    return done


def matching_agreement(
    model_a: nn.Module, model_b: nn.Module, input_shape: tuple[int, ...], normalize: bool = True
) -> tuple[float, list[dict]]:
    """How much the weights of two models of one architecture (widths may differ) agree on which hidden units
    correspond, beyond what a relabelling of units can fake.

    Each hidden-unit group is matched twice, from its incoming weights and from its outgoing weights, each side
    aligned through the matchings of the layers before (resp. after) it (the MATCH/SPEARMAN construction of
    Zhu et al., ICML 2025). For a derived model both matchings recover the same correspondence (Spearman
    correlation near 1, whatever permutation or rescaling a thief applied); for independent models they agree
    far less. Positive rescaling is removed first by equi-normalisation. Returns the mean Spearman correlation
    over groups and per-group evidence, each with the analytic one-sided Spearman p-value.

    The analytic p-values assume two unrelated random permutations. Small networks trained on the same data
    learn partly similar units, so for independent models they come out too small (measured on digits: 0.001 to
    0.07): ``compare_weights`` calibrates the score on independent models instead."""
    from scipy.stats import spearmanr

    if normalize:
        model_a, model_b = equinormalize(model_a, input_shape), equinormalize(model_b, input_shape)
    ga, gb = permutation_groups(model_a, input_shape), permutation_groups(model_b, input_shape)
    shape_of = [(len(g.producers), len(g.consumers)) for g in ga]
    if len(ga) != len(gb) or shape_of != [(len(g.producers), len(g.consumers)) for g in gb]:
        raise ConfigError("the two models do not have the same layer structure (only widths may differ)")
    sa, sb = _state(model_a), _state(model_b)
    if set(sa) != set(sb):
        raise ConfigError("the two models do not have the same parameter names (only widths may differ)")
    m_in, m_out = _matchings(ga, gb, sa, sb, "in"), _matchings(ga, gb, sa, sb, "out")
    evidence = []
    for k, g in enumerate(ga):
        if not g.permutable or k not in m_in or k not in m_out:
            continue
        both = (m_in[k] >= 0) & (m_out[k] >= 0)
        if both.sum() < 4:
            continue
        rho, p = spearmanr(m_in[k][both], m_out[k][both], alternative="greater")
        rho, p = (1.0, 0.0) if np.isnan(rho) and (m_in[k][both] == m_out[k][both]).all() else (rho, p)
        layers = sorted({n.rsplit(".", 1)[0] for n, _ in g.producers})
        evidence.append({"layers": layers, "units": int(both.sum()), "spearman": float(rho), "p_value": float(p)})
    if not evidence:
        raise ConfigError("no hidden-unit group of this architecture can be matched from both sides")
    return float(np.mean([e["spearman"] for e in evidence])), evidence


def _input_shape(model: nn.Module, input_shape) -> tuple[int, ...]:
    if input_shape is not None:
        return tuple(input_shape)
    cfg = getattr(model, "mp_config", None)
    if not cfg:
        raise ConfigError(
            "the model does not say what inputs it takes: give their shape (--input-shape 1,8,8; input_shape=)"
        )
    return tuple(cfg["input_shape"])


def default_nulls(model: nn.Module, n: int = 6, cross_architecture: bool = False) -> list[str]:
    """Independent models on ``model``'s dataset as lineage expressions (seeds far from those users pick): of
    its own architecture, or 2 seeds of each of 4 architectures. Empty unless the lineage module built it."""
    lineage, cfg = getattr(model, "mp_lineage", None), getattr(model, "mp_config", None)
    if not lineage or not cfg:
        return []
    if cross_architecture:
        archs = [a for a in ("cnn", "lenet", "mlp", "resnet-tiny") for _ in range(2)]
        return [f"train({a},{lineage['dataset']},{3001 + i % 2})" for i, a in enumerate(archs)]
    return [f"train({cfg['arch']},{lineage['dataset']},{3001 + i})" for i in range(n)]


def _calibrated(
    score: float,
    evidence: dict,
    nulls: list,
    null_score,
    alpha: float,
    scheme: str,
    cache_dir,
    device,
    stratum: str | None = None,
    owner_stratum: str | None = None,
):
    from ..decide import decide
    from ..lineage import resolve

    if len(nulls) < 2:
        raise ConfigError(
            f"calibrating {scheme} needs at least 2 independent models: pass null_models=[...] "
            "(modules, files or lineage expressions)"
        )
    scores, strata = [], []
    for m in nulls:
        m = resolve(m, cache_dir=cache_dir, device=device)
        if not isinstance(m, nn.Module):
            raise ConfigError(f"null models for {scheme} must be torch modules")
        scores.append(null_score(m))
        strata.append(architecture(m) or "")
    return decide(
        score,
        Null(np.array(scores), tuple(strata), Scale("correlation")),  # both scores are correlations (CKA >= 0)
        alpha,
        queries=0,
        scheme=scheme,
        stratum=stratum,
        owner_stratum=owner_stratum,
        null_models=[str(m) for m in nulls],
        **evidence,
    )


def compare_weights(
    model_a: nn.Module,
    model_b: nn.Module,
    *,
    input_shape: tuple[int, ...] | None = None,
    null_models=None,
    alpha: float = 0.01,
    cache_dir=None,
    device: str = "cpu",
):
    """Is ``model_b``'s checkpoint derived from ``model_a``'s? The score is ``matching_agreement``; its null is
    the score of ``model_a`` against independent models of the same architecture (``null_models``: modules,
    files or lineage expressions; by default 6 trained by the lineage module when it built ``model_a``).
    Returns the project's ``Verdict``, with the layers that carry the evidence."""
    import time

    shape = _input_shape(model_a, input_shape)
    t0 = time.perf_counter()
    score, layers = matching_agreement(model_a, model_b, shape)
    evidence = {"layers": layers, "seconds": time.perf_counter() - t0}
    nulls = list(null_models) if null_models is not None else default_nulls(model_a)
    return _calibrated(
        score,
        evidence,
        nulls,
        lambda m: matching_agreement(model_a, m, shape)[0],
        alpha,
        "weights:matching-agreement",
        cache_dir,
        device,
        architecture(model_b),
        architecture(model_a),
    )


def compare_activations(
    model_a: nn.Module,
    model_b: nn.Module,
    x: torch.Tensor,
    *,
    null_models=None,
    alpha: float = 0.01,
    cache_dir=None,
    device: str = "cpu",
):
    """Is ``model_b`` a copy of ``model_a`` in another architecture (e.g. distilled into it)? The score is
    ``cka_score`` on inputs ``x``; its null is the score of ``model_a`` against independent models of any
    architecture (``null_models``; by default 2 seeds of each of 4 architectures when the lineage module built
    ``model_a``). Returns the project's ``Verdict``."""
    nulls = list(null_models) if null_models is not None else default_nulls(model_a, cross_architecture=True)
    matrix = cka_matrix(model_a, model_b, x)
    evidence = {"best_layer_cka": matrix.max(1).round(4).tolist()}
    return _calibrated(
        float(matrix.max(1).mean()),
        evidence,
        nulls,
        lambda m: cka_score(model_a, m, x),
        alpha,
        "weights:cka",
        cache_dir,
        device,
        architecture(model_b),
        architecture(model_a),
    )


# --- invariant signatures ------------------------------------------------------------------------------------

SIGNATURE_SLOTS, SIGNATURE_SINGULAR = 8, 6


def _layer_features(w: torch.Tensor) -> np.ndarray:
    """Statistics of one weight matrix that no permutation of its rows or columns changes: the spectrum
    (relative to the Frobenius norm), the log norm, quantiles of the row norms, skewness and kurtosis."""
    m = w.detach().double().reshape(w.shape[0], -1)
    fro = float(m.norm()) or 1.0
    sv = torch.linalg.svdvals(m)[:SIGNATURE_SINGULAR] / fro
    sv = torch.nn.functional.pad(sv, (0, SIGNATURE_SINGULAR - len(sv)))
    rows = m.norm(dim=1)
    q = torch.quantile(rows, torch.tensor([0.1, 0.5, 0.9], dtype=rows.dtype)) / (rows.mean() or 1.0)
    z = (m - m.mean()) / (m.std() or 1.0)
    return np.r_[sv.numpy(), np.log(fro), q.numpy(), float(z.pow(3).mean()), float(z.pow(4).mean())]


def signature(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A fixed-length vector per model from permutation- and rescaling-invariant weight statistics (after
    equi-normalisation), each layer's statistics interpolated onto ``SIGNATURE_SLOTS`` points of depth: the key
    a registry can index to find candidate parents at scale before running the exact tests."""
    model = equinormalize(model, _input_shape(model, input_shape))
    layers = [m.weight for m in model.modules() if isinstance(m, PRODUCERS)]
    if not layers:
        raise ConfigError("a weight signature needs at least one Linear or Conv layer")
    feats = np.stack([_layer_features(w) for w in layers])  # (layers, features)
    depth = np.linspace(0, 1, len(layers)) if len(layers) > 1 else np.zeros(1)
    slots = np.linspace(0, 1, SIGNATURE_SLOTS)
    return np.concatenate([np.interp(slots, depth, feats[:, j]) for j in range(feats.shape[1])]).astype(np.float32)


def signature_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Similarity of two signatures: minus their Euclidean distance (0 for identical ones)."""
    return -float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


def cka_score(model_a: nn.Module, model_b: nn.Module, x: torch.Tensor) -> float:
    """Architecture-independent similarity: for each layer of ``model_a``, the best linear CKA with a layer of
    ``model_b`` on inputs ``x``, averaged over ``model_a``'s layers."""
    return float(cka_matrix(model_a, model_b, x).max(1).mean())


# --- the weights fingerprint file ---------------------------------------------------------------------------

WEIGHTS_VERSION = 1
_WEIGHTS_FIELDS = {
    "format": str,
    "format_version": int,
    "arch": dict,
    "owner_sha256": str,
    "created": str,
    "target_fpr": float,
    "null_models": list,
    "modelprint_version": str,
}


@dataclass(frozen=True, eq=False)
class WeightsFingerprint:
    """What an owner keeps to test checkpoints later: their model's weights and architecture, its invariant
    signature, and once calibrated the matching agreement of independent models of the same architecture.
    ``verify`` needs the suspect's weights (a white-box suspect)."""

    arch: dict
    weights: dict[str, torch.Tensor]
    signature: np.ndarray
    owner_sha256: str
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    null_scores: np.ndarray | None = None
    null_models: tuple[str, ...] = ()
    target_fpr: float = 0.01
    null_strata: tuple[str, ...] = ()
    label = "weights"
    scale = Scale("correlation")  # the matching agreement is a mean Spearman correlation

    @classmethod
    def of(cls, model: nn.Module) -> WeightsFingerprint:
        from ..digest import module_digest

        cfg = getattr(model, "mp_config", None)
        if not cfg:
            raise ConfigError(
                "a weights fingerprint stores the owner's architecture to rebuild it: build the model with "
                "modelprint.nets.make_net (or load it from a modelprint folder)"
            )
        state = {k: v.detach().cpu().float().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
        return cls(dict(cfg), state, signature(model), module_digest(model))

    @cached_property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.arch["input_shape"])

    @cached_property
    def owner(self) -> nn.Module:
        from ..nets import rebuild

        module = rebuild(self.arch)
        expected = {k for k, v in module.state_dict().items() if v.is_floating_point()}
        if expected != set(self.weights):
            raise ConfigError(f"weights {sorted(expected ^ set(self.weights))[:3]} do not match the architecture")
        module.load_state_dict(self.weights, strict=False)  # integer buffers (batch counters) are not stored
        return module.eval()

    @property
    def owner_arch(self) -> str | None:
        return self.arch.get("arch")

    @cached_property
    def null(self) -> Null | None:
        return None if self.null_scores is None else Null(self.null_scores, self.null_strata, self.scale)

    @cached_property
    def self_score(self) -> float:
        return self.similarity(self.owner)

    def similarity(self, suspect: nn.Module) -> float:
        return matching_agreement(self.owner, suspect, self.input_shape)[0]

    def calibrated(self, scores, models: tuple[str, ...], target_fpr: float, strata=()) -> WeightsFingerprint:
        return replace(
            self,
            null_scores=np.asarray(scores, np.float64),
            null_models=tuple(models),
            target_fpr=float(target_fpr),
            null_strata=tuple(strata) or ("",) * len(scores),
        )

    def describe(self) -> str:
        return f"weights of a {self.arch.get('arch', '?')} ({len(self.weights)} tensors), needs the suspect's weights"

    def save(self, path: str | Path) -> Path:
        from .. import __version__, container
        from .file import WEIGHTS_FORMAT

        header = {
            "format": WEIGHTS_FORMAT,
            "format_version": WEIGHTS_VERSION,
            "arch": self.arch,
            "owner_sha256": self.owner_sha256,
            "created": self.created,
            "target_fpr": self.target_fpr,
            "null_models": list(self.null_models),
            "null_strata": list(self.null_strata),
            "modelprint_version": __version__,
        }
        tensors = {f"w.{k}": v for k, v in self.weights.items()}
        tensors["signature"] = torch.from_numpy(np.asarray(self.signature, np.float32))
        if self.null_scores is not None:
            tensors["null_scores"] = torch.from_numpy(np.asarray(self.null_scores, np.float64))
        return container.write(path, header, tensors)

    @classmethod
    def from_parts(cls, path, header: dict, tensors: dict[str, torch.Tensor]) -> WeightsFingerprint:
        from .. import container
        from ..errors import FileFormatError
        from .file import WEIGHTS_FORMAT

        header = container.check(
            path,
            header,
            tensors,
            WEIGHTS_FORMAT,
            WEIGHTS_VERSION,
            _WEIGHTS_FIELDS,
            "weights fingerprint",
            {"null_strata": (list, [])},
        )
        weights = {k[2:]: v for k, v in tensors.items() if k.startswith("w.")}
        fp = cls(
            header["arch"],
            weights,
            tensors.get("signature", torch.zeros(0)).numpy(),
            header["owner_sha256"],
            header["created"],
            None if "null_scores" not in tensors else tensors["null_scores"].numpy(),
            tuple(header["null_models"]),
            float(header["target_fpr"]),
            tuple(str(s) for s in header["null_strata"]),
        )
        try:
            fp.owner  # noqa: B018 (rebuilding validates the architecture against the stored weights)
        except Exception as e:
            raise FileFormatError(f"{path}: the stored weights do not fit the stored architecture ({e})") from None
        return fp
