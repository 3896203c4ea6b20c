"""Lineage expressions: ``train(cnn,digits,0)->finetune(1)->prune(0.5)``, parsed into operation objects."""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import ConfigError

_STEP = re.compile(r"\s*([A-Za-z_][\w-]*)\s*\((.*)\)\s*", re.S)


def split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside quotes and parentheses."""
    parts, depth, quote, start, i = [], 0, None, 0, 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            start = i + len(sep)
            i += len(sep) - 1
        i += 1
    if quote or depth:
        raise ConfigError(f"unbalanced {'quote' if quote else 'parenthesis'} in {text!r}")
    parts.append(text[start:])
    return parts


def parse_value(text: str) -> Any:
    text = text.strip()
    if text[:1] in "\"'" and text[-1:] == text[:1] and len(text) >= 2:
        return json.loads('"' + text[1:-1].replace('\\"', '"').replace('"', '\\"') + '"')
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_steps(expr: str) -> list[tuple[str, list[Any], dict[str, Any]]]:
    """``[(op_name, positional_args, keyword_args), ...]`` for each ``->``-separated step."""
    if not expr or not expr.strip():
        raise ConfigError("empty lineage expression")
    steps = []
    for raw in split_top(expr, "->"):
        m = _STEP.fullmatch(raw)
        if not m:
            raise ConfigError(f"cannot parse step {raw.strip()!r} of {expr!r}: expected name(arg, ..., key=value)")
        name, inner = m.group(1), m.group(2)
        args, kwargs = [], {}
        for item in split_top(inner, ",") if inner.strip() else []:
            key, eq, value = item.partition("=")
            if eq and re.fullmatch(r"\s*[A-Za-z_]\w*\s*", key):
                kwargs[key.strip()] = parse_value(value)
            elif kwargs:
                raise ConfigError(f"positional argument after keyword in {raw.strip()!r}")
            else:
                args.append(parse_value(item))
        steps.append((name, args, kwargs))
    return steps
