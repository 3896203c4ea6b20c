"""The README's Python examples as written. Always: each compiles and every name it takes from modelprint exists.
End to end with ``MODELPRINT_README=1`` (``make readme``): the first example builds the null bank for FPR 0.05
(270 models), the second the demo benchmark and the third a disguised MiniLM against 4 independent encoders,
about 17 minutes on 2 cores together, too long for every run."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_examples_and_each_compiles():
    assert len(BLOCKS) >= 2
    for block in BLOCKS:
        compile(block, "README.md", "exec")


def chains(tree: ast.AST):
    """Every dotted name ``a.b.c`` read in ``tree``, as its parts."""
    for node in ast.walk(tree):
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if parts and isinstance(node, ast.Name):
            yield [node.id, *reversed(parts)]


@pytest.mark.parametrize("block", BLOCKS)
def test_every_name_the_examples_use_exists(block):
    tree = ast.parse(block)
    namespace: dict = {}
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            exec(compile(ast.Module([node], []), "README.md", "exec"), namespace)
    for root, *attrs in chains(tree):
        if root not in namespace:
            continue  # a variable of the example, not a module
        obj = namespace[root]
        for attr in attrs:
            assert hasattr(obj, attr), f"README: {root}.{'.'.join(attrs)}: {obj!r} has no {attr!r}"
            obj = getattr(obj, attr)


@pytest.mark.skipif(not os.environ.get("MODELPRINT_README"), reason="end to end only with MODELPRINT_README=1")
def test_the_examples_run_as_written(tmp_path):
    env = {**os.environ, "MODELPRINT_CACHE": str(tmp_path / "cache")}
    outputs = []
    for block in BLOCKS:
        r = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        outputs.append(r.stdout)
    assert outputs[0].startswith("RELATED")
    assert "Divergent" in outputs[1] and (tmp_path / "runs" / "demo" / "report.html").exists()
