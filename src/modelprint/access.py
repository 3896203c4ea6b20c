"""What the rest of modelprint sees of a model: ``labels(x)``, ``probs(x)``, its classes and input shape,
and a query counter with an optional budget. ``WhiteBox`` wraps a torch module, ``BlackBox`` a callable."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn

from .errors import AccessError, BudgetExceededError, ConfigError

Output = Literal["logits", "probs", "labels"]


class Model:
    """A model seen through its outputs. Subclasses implement ``_outputs`` for the richest output they have."""

    output: Output = "labels"

    def __init__(
        self, num_classes: int | None = None, input_shape: Sequence[int] | None = None, budget: int | None = None
    ):
        self._num_classes = num_classes
        self._input_shape = tuple(input_shape) if input_shape is not None else None
        self.budget = budget
        self.queries = 0

    # --- what subclasses provide ---
    def _outputs(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # --- the public view ---
    @property
    def num_classes(self) -> int:
        if self._num_classes is None:
            raise AccessError(f"{self!r}: number of classes unknown; pass num_classes=")
        return self._num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        if self._input_shape is None:
            raise AccessError(f"{self!r}: input shape unknown; give it (--input-shape 1,8,8; input_shape=)")
        return self._input_shape

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.queries

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted class per input (int64, shape (N,))."""
        out = self._query(x)
        return out if self.output == "labels" else out.argmax(1)

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities per input (float32, shape (N, C))."""
        if self.output == "labels":
            raise AccessError(f"{self!r} answers hard labels only; this needs probabilities")
        out = self._query(x)
        return out.softmax(1) if self.output == "logits" else out

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw scores per input; only white-box models and logit APIs have them."""
        if self.output != "logits":
            raise AccessError(f"{self!r} does not expose logits (it answers {self.output})")
        return self._query(x)

    def _query(self, x: torch.Tensor) -> torch.Tensor:
        x = self._check_inputs(x)
        n = len(x)
        if self.budget is not None and self.queries + n > self.budget:
            raise BudgetExceededError(
                f"{self!r}: {n} more queries would exceed the budget of {self.budget} ({self.queries} spent)"
            )
        out = self._check_outputs(self._outputs(x), n)
        self.queries += n
        return out

    def _check_inputs(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ConfigError(
                f"{self!r}: inputs must be a float tensor, got {type(x).__name__} {getattr(x, 'dtype', '')}"
            )
        if self._input_shape is not None and tuple(x.shape[1:]) != self._input_shape:
            raise ConfigError(
                f"{self!r}: expected inputs of shape (N, {', '.join(map(str, self._input_shape))}),"
                f" got {tuple(x.shape)}"
            )
        return x

    def _check_outputs(self, out: torch.Tensor, n: int) -> torch.Tensor:
        if not isinstance(out, torch.Tensor):
            raise AccessError(f"{self!r}: model returned {type(out).__name__}, expected a tensor")
        if self.output == "labels":
            if out.ndim != 1 or len(out) != n or out.is_floating_point():
                raise AccessError(f"{self!r}: expected {n} integer labels, got {out.dtype} {tuple(out.shape)}")
            out = out.long()
            if self._num_classes is not None and len(out) and (out.min() < 0 or out.max() >= self._num_classes):
                raise AccessError(f"{self!r}: label outside [0, {self._num_classes})")
            return out
        if out.ndim != 2 or len(out) != n:
            raise AccessError(f"{self!r}: expected {self.output} of shape ({n}, C), got {tuple(out.shape)}")
        if self._num_classes is not None and out.shape[1] != self._num_classes:
            raise AccessError(f"{self!r}: expected {self._num_classes} classes, got {out.shape[1]}")
        out = out.float()
        if not torch.isfinite(out).all():
            raise AccessError(f"{self!r}: model returned NaN or infinite {self.output}")
        if self.output == "probs" and ((out < -1e-4).any() or ((out.sum(1) - 1).abs() > 1e-3).any()):
            raise AccessError(f"{self!r}: returned probabilities that are negative or do not sum to 1")
        return out


class WhiteBox(Model):
    """A torch module we can run: logits, probabilities, labels, and the module itself."""

    output: Output = "logits"

    def __init__(
        self,
        module: nn.Module,
        num_classes: int | None = None,
        input_shape: Sequence[int] | None = None,
        budget: int | None = None,
        device: str = "cpu",
        batch_size: int = 1024,
    ):
        cfg = getattr(module, "mp_config", {}) or {}
        super().__init__(num_classes or cfg.get("num_classes"), input_shape or cfg.get("input_shape"), budget)
        self.module = module.to(device).eval()
        self.device, self.batch_size = device, batch_size
        if self._num_classes is None and self._input_shape is not None:
            self._num_classes = int(self._forward(torch.zeros(1, *self._input_shape)).shape[1])

    @torch.no_grad()
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = next((p.dtype for p in self.module.parameters()), torch.float32)
        chunks = [
            self.module(x[i : i + self.batch_size].to(self.device, dtype)).float().cpu()
            for i in range(0, len(x), self.batch_size)
        ]
        return torch.cat(chunks) if chunks else torch.empty(0, self._num_classes or 0)

    def _outputs(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)

    def __repr__(self) -> str:
        cfg = getattr(self.module, "mp_config", None)
        return f"WhiteBox({cfg['arch'] if cfg else type(self.module).__name__})"


class BlackBox(Model):
    """A callable that answers a batch of inputs with labels (N,) or probabilities (N, C)."""

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        output: Literal["labels", "probs"] = "labels",
        num_classes: int | None = None,
        input_shape: Sequence[int] | None = None,
        budget: int | None = None,
    ):
        if output not in ("labels", "probs"):
            raise ConfigError(f"BlackBox output must be 'labels' or 'probs', got {output!r}")
        super().__init__(num_classes, input_shape, budget)
        self.fn, self.output = fn, output

    def _outputs(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = self.fn(x)
        if isinstance(out, torch.Tensor):
            return out
        try:  # numpy arrays and lists are fine; anything else is a malformed answer
            return torch.as_tensor(out)
        except (TypeError, ValueError, RuntimeError):
            raise AccessError(f"{self!r}: model returned {type(out).__name__}, expected a tensor") from None

    def __repr__(self) -> str:
        return f"BlackBox({getattr(self.fn, '__name__', type(self.fn).__name__)}, output={self.output!r})"


class View(Model):
    """``model`` restricted to one kind of output (and optionally a budget of its own), sharing its query
    counter: what a scheme that needs only hard labels is allowed to see of a suspect."""

    def __init__(self, model: Model, output: Output = "labels", budget: int | None = None):
        rank = {"labels": 0, "probs": 1, "logits": 2}
        if rank[output] > rank[model.output]:
            raise AccessError(f"{model!r} answers {model.output} only; this needs {output}")
        super().__init__(model._num_classes, model._input_shape, budget)
        self.model, self.output = model, output

    def _outputs(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.output)(x)

    def __repr__(self) -> str:
        return f"{self.model!r}[{self.output}]"


def hard_labels(model: Model) -> View:
    """A hard-label-only view of ``model`` sharing its query counter (what label-only APIs expose)."""
    return View(model, "labels")


def as_model(obj: Model | nn.Module | Callable, **kwargs) -> Model:
    """Coerce a module (white-box), a ``Model``, or a callable returning labels (black-box) into a ``Model``."""
    if isinstance(obj, Model):
        return obj
    if isinstance(obj, nn.Module):
        return WhiteBox(obj, **kwargs)
    if callable(obj):
        return BlackBox(obj, **kwargs)
    raise ConfigError(f"cannot use {type(obj).__name__} as a model: expected nn.Module, Model or callable")


def architecture(model) -> str | None:
    """The architecture family a null stratum is named after: modelprint's net name, else the module's class
    (TorchScript keeps the original's); ``None`` for models whose internals are not visible."""
    while isinstance(model, View):
        model = model.model
    module = model.module if isinstance(model, WhiteBox) else model
    if not isinstance(module, nn.Module):
        return None
    cfg = getattr(module, "mp_config", None)
    if cfg and cfg.get("arch"):
        return str(cfg["arch"])
    return str(getattr(module, "original_name", "") or type(module).__name__)
