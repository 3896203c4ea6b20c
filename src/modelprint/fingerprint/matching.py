"""Weight matching that sees through network symmetries: Git Re-Basin weight matching (Ainsworth et al., ICLR
2023), equi-normalisation of positive ReLU rescaling, and the agreement statistic of matched weights (an
independence test). The permutation structure comes from ``modelprint.symmetry`` (derived from the module graph)."""

from __future__ import annotations

import copy

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from ..errors import ConfigError
from ..symmetry import Group, apply_permutation, apply_scaling, permutation_groups


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


def input_shape_of(model: nn.Module, input_shape) -> tuple[int, ...]:
    """The shape given, else the one a modelprint net records; symmetries are traced on inputs of this shape."""
    if input_shape is not None:
        return tuple(input_shape)
    cfg = getattr(model, "mp_config", None)
    if not cfg:
        raise ConfigError(
            "the model does not say what inputs it takes: give their shape (--input-shape 1,8,8; input_shape=)"
        )
    return tuple(cfg["input_shape"])
