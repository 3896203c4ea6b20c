"""TAFA's data-free, task-agnostic queries (Pan et al., "TAFA: A Task-Agnostic Fingerprinting Algorithm for Neural
Networks", ESORICS 2021): a ReLU network is affine inside each region of constant activation pattern, so a point
where chosen hidden units sit exactly at their activation boundary is the solution of a linear program, found
without any training data and compared on the raw outputs, whatever the task."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .queries import SAMPLERS, Context, Queries, Sampler

# activations whose kink is at 0: the boundaries TAFA's linear program puts its queries on
KINKED = (nn.ReLU, nn.LeakyReLU, nn.ReLU6)


def preactivations(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The inputs of every ReLU-type module of ``module`` on ``x``, flattened and concatenated: (n, units)."""
    captured: list[torch.Tensor] = []

    def grab(_mod, inputs):  # before the activation: an in-place ReLU overwrites its input
        captured.append(inputs[0].flatten(1).clone())

    hooks = [m.register_forward_pre_hook(grab) for m in module.modules() if isinstance(m, KINKED)]
    try:
        module(x)
    finally:
        for h in hooks:
            h.remove()
    if not captured:
        raise ConfigError(
            "TAFA needs a network whose activations are nn.ReLU modules (it solves for inputs on their "
            "boundaries); this model has none (functional relu, GELU, or a TorchScript/ONNX graph)"
        )
    return torch.cat(captured, 1)


def local_affine(module: nn.Module, x0: torch.Tensor, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """The pre-activations around one input as an affine map, z(x) = J x + c, exact inside ``x0``'s activation
    region: J row by row by reverse mode, ``chunk`` units per pass (the module's own gradients are not touched)."""
    with torch.no_grad():
        z0 = preactivations(module, x0[None])[0]
    rows = []
    for start in range(0, len(z0), chunk):
        idx = torch.arange(start, min(start + chunk, len(z0)), device=x0.device)
        xs = x0.expand(len(idx), *x0.shape).clone().requires_grad_(True)
        z = preactivations(module, xs)
        (g,) = torch.autograd.grad(z[torch.arange(len(idx)), idx].sum(), xs)
        rows.append(g.flatten(1))
    jac = torch.cat(rows).double()
    return jac, z0.double() - jac @ x0.flatten().double()


def boundary_point(
    jac: np.ndarray, c: np.ndarray, x0: np.ndarray, units: np.ndarray, low: float, high: float
) -> np.ndarray | None:
    """TAFA's linear program: the input nearest ``x0`` (L1) in the data's box whose ``units`` are exactly at their
    activation boundary (J_u x + c_u = 0) while every other unit keeps its sign at ``x0``, so the affine map stays
    exact. ``None`` when no such point exists."""
    from scipy.optimize import linprog

    d = len(x0)
    z0 = jac @ x0 + c
    live = np.linalg.norm(jac, axis=1) > 1e-9  # a unit constant in this region constrains nothing
    keep = live.copy()
    keep[units] = False
    sign = np.where(z0[keep] >= 0, 1.0, -1.0)
    eye = np.eye(d)
    # variables [x, t] with |x - x0| <= t; minimise sum t
    a_ub = np.vstack(
        [
            np.hstack([eye, -eye]),
            np.hstack([-eye, -eye]),
            np.hstack([-sign[:, None] * jac[keep], np.zeros((int(keep.sum()), d))]),
        ]
    )
    b_ub = np.concatenate([x0, -x0, sign * c[keep]])
    a_eq = np.hstack([jac[units], np.zeros((len(units), d))])
    res = linprog(
        np.concatenate([np.zeros(d), np.ones(d)]),
        A_ub=a_ub,
        b_ub=b_ub,
        A_eq=a_eq,
        b_eq=-c[units],
        bounds=[(low, high)] * d + [(0, None)] * d,
        method="highs",
    )
    return res.x[:d] if res.status == 0 else None


def walk(module: nn.Module, x0: torch.Tensor, units: int, low: float, high: float, tries: int = 4) -> torch.Tensor:
    """From ``x0``, put one more hidden unit at a time exactly on its activation boundary, keeping the units
    already there on theirs: of the ``tries`` units nearest their hyperplanes, the first whose program is
    feasible. Stops after ``units`` units or where no candidate is feasible; returns the point, flattened."""
    x, on = x0.flatten().double().cpu().numpy(), []
    for _ in range(units):
        jac, c = (t.cpu().numpy() for t in local_affine(module, torch.from_numpy(x).to(x0).view_as(x0)))
        norm = np.linalg.norm(jac, axis=1)
        dist = np.abs(jac @ x + c) / np.maximum(norm, 1e-9)
        dist[norm <= 1e-9] = np.inf
        dist[on] = np.inf
        for u in np.argsort(dist)[:tries]:
            y = boundary_point(jac, c, x, np.array([*on, u]), low, high) if np.isfinite(dist[u]) else None
            if y is not None:
                x, on = y, [*on, int(u)]
                break
        else:
            break
    return torch.from_numpy(x)


@SAMPLERS.register("tafa")
class TAFA(Sampler):
    """TAFA's queries (Pan et al., ESORICS 2021): from a random point of the input box (no training data is read,
    only the data's range), a walk onto the intersection of ``units`` activation boundaries of the owner's hidden
    ReLU units. Each step solves the linear program of the owner's local affine map for the nearest point that
    puts one more unit exactly at its boundary while the units already there stay there (of the ``tries``
    nearest candidates, the first feasible one); the walk stops early where none is. The queries are compared on
    the raw outputs (no labels), so the scheme applies to any task a ReLU network solves; ``units=0`` sends the
    random starts themselves (the ablation of the program).

    Deviations: the paper's text was not available to us; the program's objective (L1 distance to the current
    point), the greedy choice of the units, and the comparison (``centred-cosine`` of the outputs: independent
    models answer noise alike) are modelprint's reading of it. Networks without nn.ReLU modules are refused."""

    gradients = True

    def __init__(self, units: int = 4, tries: int = 4):
        self.units, self.tries = units, tries

    def sample(self, ctx: Context) -> Queries:
        module = ctx.owner_module(self).eval()
        device = next(module.parameters()).device
        shape = ctx.x.shape[1:]
        out = []
        for _ in range(ctx.budget):
            x0 = ctx.low + torch.rand(*shape, generator=ctx.gen) * ctx.span
            out.append(walk(module, x0.to(device), self.units, ctx.low, ctx.high, self.tries).view(shape))
        return Queries(torch.stack(out).float().cpu())
