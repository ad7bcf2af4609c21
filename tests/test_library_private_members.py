# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The package and the configs use MONAI's, Ignite's, MLflow's and PyTorch's public API only: a private member of a
library (a name with one leading underscore) is neither read, called, nor overridden, so a minor release of a library
that renames its internals cannot break them. The one exception is a hook a library declares abstract for its
subclasses to write (MONAI's ``CumulativeIterationMetric._compute_tensor``): that is its public contract.

Checked on the source (AST): no ``obj._name`` on anything but ``self``/``cls``; in a class derived from a library
class, no ``self._name`` or method ``_name`` that the library class (any of its bases outside this package) defines
or sets; and no ``._name`` in any string of the bundle's configs (their ``$`` expressions)."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted((REPO_ROOT / "egeunet_monai").rglob("*.py"))
CONFIGS = sorted((REPO_ROOT / "configs").glob("*.json"))
PRIVATE = re.compile(r"^_[A-Za-z0-9]\w*$")  # one leading underscore, not a dunder
SELF_PRIVATE = re.compile(r"\bself\.(_[A-Za-z0-9]\w*)")


def _is_private(name: str) -> bool:
    return bool(PRIVATE.match(name)) and not name.endswith("__")


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)


def _library_private_names(cls: type) -> set[str]:
    """Private names a class's bases outside this package define (class members) or set (``self._x`` in their
    source)."""
    names: set[str] = set()
    for base in cls.__mro__[1:]:
        if base is object or base.__module__.startswith("egeunet_monai"):
            continue
        names.update(n for n in vars(base) if _is_private(n))
        try:
            names.update(SELF_PRIVATE.findall(inspect.getsource(base)))
        except (OSError, TypeError):  # a built-in or compiled base: its class members above are all there is
            pass
    # a hook some base declares abstract is the library's contract with its subclasses, not an internal
    hooks = {n for base in cls.__mro__ for n, v in vars(base).items() if getattr(v, "__isabstractmethod__", False)}
    return names - hooks


def private_uses(path: Path, module_name: str) -> list[str]:
    """``file:line: what`` for each use of a library's private member in the module at ``path`` (importable as
    ``module_name``, to find the bases of its classes)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module = importlib.import_module(module_name)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.ClassDef):
            cls = getattr(module, node.name, None)
            library = _library_private_names(cls) if isinstance(cls, type) else set()
            for sub in ast.walk(node):
                name = None
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    name = sub.name
                elif isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id == "self":
                    name = sub.attr
                if name in library:
                    found.append(f"{path.name}:{sub.lineno}: {node.name} uses its library base's {name}")
    return found


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(REPO_ROOT)) for p in MODULES])
def test_modules_use_no_private_member_of_a_library(path: Path) -> None:
    assert private_uses(path, _module_name(path)) == []


def test_the_check_finds_private_members(tmp_path: Path, monkeypatch) -> None:
    """The check above can fail: a module that overrides, calls and reads library internals is caught three ways."""
    package = tmp_path / "egeunet_monai_probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    source = package / "probe.py"
    source.write_text(
        "from monai.handlers import MLFlowHandler\n"
        "class Handler(MLFlowHandler):\n"
        "    def _log_params(self, params):\n"  # overrides a private method
        "        self._set_experiment()\n"  # calls one
        "def tracker(saver):\n"
        "    return saver._key_metric_checkpoint\n"  # reads a private attribute
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = private_uses(source, "egeunet_monai_probe.probe")
    assert any("_key_metric_checkpoint" in f for f in found), found
    assert any("_log_params" in f for f in found) and any("_set_experiment" in f for f in found), found


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield k
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_configs_reach_no_private_attribute(path: Path) -> None:
    config = json.loads(path.read_text(encoding="utf-8"))
    assert [s for s in _strings(config) if re.search(r"\._[A-Za-z]", s)] == []
