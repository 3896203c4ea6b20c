"""One base class and one registry for every named, parameterised object of the project.

Objects store their constructor arguments and nothing else in ``__init__`` (scikit-learn's convention),
so they print, compare and hash by their parameters; registries resolve names the way the CLI and
config strings spell them (timm's convention).
"""

from __future__ import annotations

import fnmatch
import inspect
import json
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Params:
    """Identity by constructor parameters: ``get_params``, ``repr``, ``==`` and ``hash`` derive from them."""

    name: str = ""  # set by Registry.register

    @classmethod
    def param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [
            p.name
            for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    @classmethod
    def param_defaults(cls) -> dict[str, Any]:
        sig = inspect.signature(cls.__init__)
        return {n: p.default for n, p in sig.parameters.items() if p.default is not p.empty}

    def get_params(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in self.param_names()}

    def spec(self) -> str:
        """Canonical ``name(a,b,k=v)`` string: required parameters positional, changed defaults by keyword."""
        defaults = self.param_defaults()
        parts = []
        for n, v in self.get_params().items():
            if n not in defaults:
                parts.append(format_value(v))
            elif v != defaults[n]:
                parts.append(f"{n}={format_value(v)}")
        return f"{self.name or type(self).__name__}({','.join(parts)})"

    def __repr__(self) -> str:
        return self.spec()

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_params() == other.get_params()  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(sorted(self.get_params().items()))))


def format_value(v: Any) -> str:
    """A value as the expression parser reads it back (strings with separators are quoted)."""
    if isinstance(v, str) and (v == "" or any(c in v for c in ",()=\"' ")):
        return json.dumps(v)
    return str(v)


class Registry(Generic[T]):
    """Named factories of one kind: ``@REG.register("name")``, ``REG.make("name", ...)``, ``REG.names("c*")``."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}

    def register(self, name: str, *aliases: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(obj: Callable[..., T]) -> Callable[..., T]:
            for n in (name, *aliases):
                if n in self._items:
                    raise ValueError(f"{self.kind} {n!r} registered twice")
                self._items[n] = obj
            if isinstance(obj, type):
                obj.name = name  # type: ignore[attr-defined]
            return obj

        return deco

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def make(self, name: str, *args: Any, **kwargs: Any) -> T:
        factory = self.get(name)
        try:
            return factory(*args, **kwargs)
        except TypeError as e:
            raise ConfigError(f"bad arguments for {self.kind} {name!r}: {e}") from None

    def from_spec(self, spec: str) -> T:
        """The object a spec string names: ``"name"`` or ``"name(arg, key=value)"``."""
        from .lineage.expr import parse_steps  # the one parser of name(args) strings; lazy: lineage imports us

        [(name, args, kwargs)] = parse_steps(spec if "(" in spec else f"{spec}()")
        return self.make(name, *args, **kwargs)

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        return name in self._items
