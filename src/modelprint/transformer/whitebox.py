"""White-box comparisons of two transformers that see through permutations and rotations, each with a verdict
calibrated on independent models (``modelprint compare --method units|invariants|hidden-cka``).

- ``units`` (after Zhu et al., "Independence Tests for Language Models", ICML 2025, the MATCH/SPEARMAN test):
  every block's MLP units are matched twice between the two models, once by their pre-activations on the same
  inputs, once by what they write into the residual stream (the inner product of their output weights with the
  stream they join), and the score is the Spearman correlation of the two matchings, averaged over blocks. Both
  views are computed quantities, so neither a permutation of units or heads nor a rotation of the stream (with
  norms folded) changes them; a derived model's two matchings agree, an independent model's do not. Deviation:
  the paper matches a GLU's gate and up projections; BERT and ViT MLPs have no gate, so the second view is the
  unit's output side. Per-block analytic p-values (one-sided Spearman, combined by Fisher) are in the evidence;
  they assume unrelated unit orders, which models trained on the same data need not have, so the verdict is
  calibrated on independent models instead.
- ``invariants`` (after HuRef, Zeng et al., NeurIPS 2024): per block, X Wq^T Wk X^T, X Wv^T Wo^T X^T and
  X Wup^T Wdown^T X^T over the stream states X of the embedding layer on the inputs, standardised, and the cosine
  of the two models' concatenations (HuRef's ICS / 100). Deviation: a pre-LN model's norm gains are folded into
  the layers that read them first (on a copy) and X is normalised, which makes the terms invariant to a stream
  rotation with folded gains (HuRef's raw terms are not: Zhu et al., App. F); X is the embedding layer's output
  on real inputs rather than the 4096 rarest tokens' embedding rows.
- ``hidden-cka`` (after REEF, Zhang et al., ICLR 2025): linear CKA between the two models' per-input hidden states
  (mean over tokens) at every block, best block of the suspect for each of the owner's, averaged. Works across
  depths and widths (distilled copies). Deviation: features are centred, not z-scored (REEF's code standardises
  each feature, which breaks the invariance to rotations).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from scipy.optimize import linear_sum_assignment
from torch import nn

from ..errors import ConfigError
from ..fingerprint.cka import linear_cka
from .symmetry import fold_norms
from .view import view

PROBES = 64  # inputs each comparison runs both models on (sentences: about 1,500 tokens)


def probe_inputs(model: nn.Module, data="text", n: int = PROBES):
    """The inputs a comparison runs ``model`` on: for a text encoder, the probe sentences tokenised by its own
    tokenizer; for a transformer classifier, the first ``n`` held-out inputs of ``data``."""
    from ..fingerprint.helpers import held_out
    from .text import SentenceEncoder, corpus

    if isinstance(model, SentenceEncoder):
        return model.tokenize(corpus("probe")[:n] if data in ("text", None) else list(data)[:n])
    return held_out(data)[0][:n].to(next(model.parameters()).device)


def _same_tokens(ia, ib) -> None:
    if isinstance(ia, Mapping) and not torch.equal(ia["input_ids"].cpu(), ib["input_ids"].cpu()):
        raise ConfigError("the two encoders tokenise the probe text differently: units and invariants compare "
                          "models of one vocabulary (hidden-cka does not need one)")  # fmt: skip


def _match(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """For each column (unit) of ``x``, the column of ``y`` with the most correlated profile over the rows, one
    to one by linear assignment; -1 where ``y`` has no partner left. Constant columns correlate with nothing."""
    x = F.normalize(x - x.mean(0), dim=0)
    y = F.normalize(y - y.mean(0), dim=0)
    rows, cols = linear_sum_assignment((x.T @ y).numpy(), maximize=True)
    m = np.full(x.shape[1], -1)
    m[rows] = cols
    return m


@torch.no_grad()
def unit_agreement(a: nn.Module, b: nn.Module, inputs_a, inputs_b) -> tuple[float, dict]:
    """The ``units`` score of ``b`` against ``a`` on the given inputs, and per-block evidence."""
    _same_tokens(inputs_a, inputs_b)
    va, vb = view(a), view(b)
    if len(va.layers) != len(vb.layers):
        raise ConfigError(f"units compares models of one depth ({len(va.layers)} and {len(vb.layers)} blocks); "
                          "hidden-cka compares across depths")  # fmt: skip
    sa, sb = va.activations(inputs_a, ("up", "residual")), vb.activations(inputs_b, ("up", "residual"))
    blocks = []
    for k, (la, lb) in enumerate(zip(va.layers, vb.layers, strict=True)):
        by_input = _match(sa["up"][k], sb["up"][k])
        by_output = _match(sa["residual"][k] @ la.down.weight.double(), sb["residual"][k] @ lb.down.weight.double())
        both = (by_input >= 0) & (by_output >= 0)
        rho, p = stats.spearmanr(by_input[both], by_output[both], alternative="greater")
        if np.isnan(rho):  # constant matchings: identical is full agreement
            rho, p = (1.0, 0.0) if (by_input[both] == by_output[both]).all() else (0.0, 1.0)
        blocks.append({"block": k, "units": int(both.sum()), "spearman": round(float(rho), 4), "p_value": float(p)})
    p_values = np.clip([blk["p_value"] for blk in blocks], 1e-300, 1)
    fisher = float(stats.chi2.sf(-2 * np.log(p_values).sum(), 2 * len(blocks)))
    evidence = {
        "blocks": blocks,
        "analytic_p_value": fisher,
        "analytic_note": "one-sided Spearman per block, Fisher's combination; assumes unrelated unit orders",
    }
    return float(np.mean([blk["spearman"] for blk in blocks])), evidence  # fmt: skip


def _terms(model: nn.Module, inputs, rows: int = 256) -> list[torch.Tensor]:
    """HuRef's three invariant terms per block, standardised, over the embedding stream of the first ``rows``
    tokens."""
    v = fold_norms(view(copy.deepcopy(model).float()))
    x = v.activations(inputs, ("embedding",))["embedding"][:rows]
    if not v.post_ln:
        x = F.layer_norm(x, x.shape[-1:])  # what a folded pre-LN reader sees
    out = []
    for layer in v.layers:
        w = {k: getattr(layer, k).weight.double() for k in ("query", "key", "value", "output", "up", "down")}
        for term in (
            (x @ w["query"].T) @ (x @ w["key"].T).T,
            x @ w["value"].T @ w["output"].T @ x.T,
            x @ w["up"].T @ w["down"].T @ x.T,
        ):
            out.append(((term - term.mean()) / term.std().clamp_min(1e-30)).flatten())
    return out


@torch.no_grad()
def invariant_similarity(a: nn.Module, b: nn.Module, inputs_a, inputs_b) -> tuple[float, dict]:
    """The ``invariants`` score of ``b`` against ``a``: the cosine of their standardised invariant terms."""
    _same_tokens(inputs_a, inputs_b)
    ta, tb = _terms(a, inputs_a), _terms(b, inputs_b)
    if len(ta) != len(tb):
        raise ConfigError(f"invariants compares models of one depth ({len(ta) // 3} and {len(tb) // 3} blocks)")
    per = [float(F.cosine_similarity(x, y, dim=0)) for x, y in zip(ta, tb, strict=True)]
    names = ("query-key", "value-output", "mlp")
    evidence = {"terms": [{"block": i // 3, "term": names[i % 3], "cosine": round(c, 4)} for i, c in enumerate(per)]}
    return float(F.cosine_similarity(torch.cat(ta), torch.cat(tb), dim=0)), evidence


def _pooled(model: nn.Module, inputs) -> list[torch.Tensor]:
    acts = view(model).activations(inputs, ("hidden", "sample"))
    sample = acts["sample"]
    count = torch.bincount(sample).double()[:, None]
    return [torch.zeros(len(count), h.shape[1], dtype=h.dtype).index_add_(0, sample, h) / count for h in acts["hidden"]]


@torch.no_grad()
def hidden_similarity(a: nn.Module, b: nn.Module, inputs_a, inputs_b) -> tuple[float, dict]:
    """The ``hidden-cka`` score of ``b`` against ``a``: per owner block, the best linear CKA with a suspect block."""
    ha, hb = _pooled(a, inputs_a), _pooled(b, inputs_b)
    if len(ha[0]) != len(hb[0]):
        raise ConfigError("the two models were given different numbers of inputs")
    matrix = np.array([[linear_cka(x, y) for y in hb] for x in ha])
    return float(matrix.max(1).mean()), {"best_block_cka": matrix.max(1).round(4).tolist()}


SCORES = {"units": unit_agreement, "invariants": invariant_similarity, "hidden-cka": hidden_similarity}


def similarity(method: str, a: nn.Module, b: nn.Module, data="text") -> tuple[float, dict]:
    """``method``'s score of suspect ``b`` against owner ``a`` on their probe inputs, and its evidence."""
    if method not in SCORES:
        raise ConfigError(f"unknown transformer comparison {method!r}; one of {', '.join(SCORES)}")
    return SCORES[method](a, b, probe_inputs(a, data), probe_inputs(b, data))


def compare(method: str, a: nn.Module, b: nn.Module, data="text", *, null_models=None, alpha: float = 0.01,
            cache_dir=None, device: str = "cpu"):  # fmt: skip
    """Is ``b`` derived from ``a``? ``method``'s score, calibrated on ``null_models`` (independent models: modules,
    files, encoder folders or lineage expressions; by default, for a modelprint net, 6 of its architecture trained
    by the lineage module). Returns the project's ``Verdict``."""
    from ..access import architecture
    from ..fingerprint.weights import _calibrated, default_nulls

    score, evidence = similarity(method, a, b, data)
    nulls = list(null_models) if null_models is not None else default_nulls(a)
    if not nulls:
        raise ConfigError(f"calibrating {method} needs independent models of the owner's kind: pass null_models "
                          "(for a text encoder, e.g. modelprint.transformer.derive.independent)")  # fmt: skip
    owner_inputs = probe_inputs(a, data)

    def null_score(m: nn.Module) -> float:
        return SCORES[method](a, m, owner_inputs, probe_inputs(m, data))[0]

    verdict = _calibrated(score, evidence, nulls, null_score, alpha, f"transformer:{method}", cache_dir, device,
                          architecture(b), architecture(a))  # fmt: skip
    return verdict if method != "units" else _with_analytic(verdict)


def _with_analytic(verdict):
    """A ``units`` verdict holds when both its p-values do: the one against the null models (valid if they are
    exchangeable with the suspect) and the analytic one (valid if unit orders are unrelated). The larger decides,
    so a handful of null models with little spread cannot accuse on a parametric tail alone."""
    from dataclasses import replace

    analytic = verdict.evidence["analytic_p_value"]
    if analytic <= verdict.p_value:
        return verdict
    related = analytic <= verdict.alpha
    warnings = verdict.warnings
    if verdict.related and not related:
        warnings += (f"the score clears the null models' threshold, but the analytic p-value {analytic:.3g} does not "
                     f"reach {verdict.alpha:g}",)  # fmt: skip
    outcome = verdict.outcome if verdict.outcome == "inconclusive" else ("related" if related else "not related")
    return replace(verdict, p_value=analytic, related=outcome == "related", outcome=outcome, warnings=warnings,
                   method=f"{verdict.method}; the analytic p-value, larger")  # fmt: skip
