"""docs/writing-a-plugin.md shows real, complete code and the core's real defaults.

* Blocks marked ``<!-- file: path -->`` are the whole file, ``<!-- excerpt: path -->`` a verbatim part of it.
* Every Python block compiles, and every name a block uses is defined by the guide's Python code (an import, a
  definition, a parameter) or is a builtin: an excerpt never leans on a helper or fixture the reader cannot see.
* The retry and circuit-breaker defaults in the guide are the ones ``hub/config.py`` applies, the ``custom``
  template's variables are the built-in template's, and the example provider stays about 40 lines.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import re
from pathlib import Path

import pytest

from hub.builtins.templates import CUSTOM
from hub.config import BreakerSchema, RetrySchema
from hub.testing import contracts

REPO = Path(__file__).resolve().parent.parent
GUIDE = REPO / "docs" / "writing-a-plugin.md"
EXAMPLE_MODULE = "examples/hub-example/hub_example/__init__.py"

_MARKED = re.compile(r"^<!-- (file|excerpt): (\S+) -->\n```\w*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_PYTHON = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def guide() -> str:
    return GUIDE.read_text()


def python_blocks() -> list[str]:
    return _PYTHON.findall(guide())


def test_the_guide_shows_the_examples_real_code() -> None:
    blocks = _MARKED.findall(guide())
    assert len(blocks) >= 4, "docs/writing-a-plugin.md shows none of the example's code"
    for kind, path, code in blocks:
        source = (REPO / path).read_text()
        if kind == "file":
            assert code == source, f"docs/writing-a-plugin.md shows an outdated copy of {path}"
        else:
            assert code in source, f"docs/writing-a-plugin.md shows an excerpt no longer in {path}:\n{code[:300]}"
    shown_whole = {path for kind, path, _ in blocks if kind == "file"}
    assert EXAMPLE_MODULE in shown_whole, "the guide must show the whole plugin module, imports and helpers included"


@pytest.mark.parametrize("number", range(len(python_blocks())))
def test_every_python_block_compiles(number: int) -> None:
    code = python_blocks()[number]
    try:
        compile(code, f"{GUIDE.name} python block {number + 1}", "exec")
    except SyntaxError as error:
        pytest.fail(f"python block {number + 1} of the guide does not compile: {error}\n{code[:400]}")


def _names(tree: ast.AST) -> tuple[set[str], dict[str, int]]:
    """(names the code defines, names it reads -> the first line reading each)."""
    defined: set[str] = set()
    used: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                used.setdefault(node.id, node.lineno)
            else:
                defined.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            defined.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            defined.add(node.name)
    return defined, used


def test_every_name_the_python_blocks_use_is_shown() -> None:
    trees = [ast.parse(code) for code in python_blocks()]
    defined = set(dir(builtins))
    for tree in trees:
        defined |= _names(tree)[0]
    missing = []
    for number, tree in enumerate(trees, start=1):
        for name, line in _names(tree)[1].items():
            if name not in defined:
                missing.append(f"block {number}, line {line}: {name}")
    assert not missing, "the guide's code uses names it never shows (import or define them):\n" + "\n".join(missing)


def test_run_contracts_inputs_are_all_listed() -> None:
    text = guide()
    for capability, check in contracts._CAPABILITY_CHECKS.items():
        row = re.search(rf"^\| {capability} +\| ([^\n]+)\|$", text, re.MULTILINE)
        assert row, f"the guide's run_contract table has no row for {capability}"
        inputs = [name for name in inspect.signature(check).parameters if name not in ("harness", "provider")]
        missing = [name for name in inputs if f"`{name}=`" not in row.group(1)]
        assert not missing, f"the guide's run_contract table does not list {capability}'s inputs {missing}"


def test_the_retry_and_breaker_defaults_are_the_cores() -> None:
    text = guide()
    for section, schema in (("retry", RetrySchema), ("circuit_breaker", BreakerSchema)):
        for key, value in schema().load({}).items():
            row = re.search(rf"^\| `{section}\.{key}` +\| ([^|]+)\|", text, re.MULTILINE)
            assert row, f"the guide's defaults table has no row for {section}.{key}"
            shown = row.group(1).strip().removesuffix(" s")
            assert float(shown) == float(value), f"{section}.{key}: the guide says {shown}, hub/config.py {value}"


def test_the_custom_templates_variables_are_the_built_in_ones() -> None:
    text = guide()
    for template in CUSTOM:
        row = re.search(rf"^\| `{template.channel}` +\| ([^|]+)\|", text, re.MULTILINE)
        assert row, f"the guide does not list the custom template's {template.channel} variables"
        for variable in template.required:
            assert f"`{variable}`" in row.group(1), f"custom/{template.channel}: {variable} is not listed"
        optional = {"subject"} - set(template.required) if template.channel == "sms" else set()
        for variable in optional:
            assert "optional" in row.group(1), f"custom/{template.channel}: {variable} is optional"


def test_the_example_provider_fits_in_about_40_lines() -> None:
    """The aim of hub.http: a notify provider with a settings schema, a health check and the hub's error mapping
    in about 40 lines (the settings, the class and its helper; not the docstrings, templates or set-up hooks)."""
    source = (REPO / EXAMPLE_MODULE).read_text()
    start = source.index("class WebhookNotifierSettings")
    end = source.index("# --- set-up hooks")
    lines = [line for line in source[start:end].splitlines() if line.strip() and not line.strip().startswith("#")]
    docstrings = sum(1 for line in lines if line.strip().startswith('"""'))
    assert len(lines) - docstrings <= 45, f"the example provider has grown to {len(lines) - docstrings} lines"
