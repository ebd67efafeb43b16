"""The house shows the processes: every import inside the package points down the layers, or stays in its package.

    core  <  binance  <  store  <  feed | api | consumers | report | notify | fake  <  the package root (demo)

The process packages never import each other: they meet only in ``store``, ``binance`` and ``core``. The fake
exchange is a peer of the processes (tests, benchmarks and the demo drive it); no process imports it. Imports are
read with ``ast``, function-level ones included, so a lazy import cannot hide an upward edge.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

from .conftest import ROOT

PACKAGE = "volspike_funding"
LAYER = {"core": 0, "binance": 1, "store": 2,
         "feed": 3, "api": 3, "consumers": 3, "report": 3, "notify": 3, "fake": 3}
TOP = 9  # modules directly in the package (the demo): they may import anything


def _part(module: str) -> str | None:
    """The subpackage a dotted module name belongs to, ``""`` for the package root, None outside the package."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    return parts[1] if len(parts) > 1 and parts[1] in LAYER else ""


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
    return found


def violations(package_dir: Path) -> list[str]:
    """Every import in ``package_dir`` that points up the layers or sideways between process packages."""
    problems = []
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir.parent).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        here = _part(module)
        here_layer = TOP if here == "" else LAYER[here]
        for line, target in _imports(path, module):
            there = _part(target)
            if there is None or there == here:
                continue
            if here == "" and path.name != "__init__.py":
                continue  # the demo sits above everything
            there_layer = TOP if there == "" else LAYER[there]
            if there_layer >= here_layer:
                direction = "sideways" if there_layer == here_layer else "upward"
                problems.append(f"{path.relative_to(package_dir.parent)}:{line}: {direction} import of {target} "
                                f"({here or 'root'} -> {there or 'root'})")
    return problems


def test_every_import_points_down_the_layers():
    assert violations(ROOT / PACKAGE) == []


def test_an_upward_or_sideways_import_fails(tmp_path):
    copy = tmp_path / PACKAGE
    shutil.copytree(ROOT / PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "core" / "upward.py").write_text("def f():\n    from volspike_funding.api.app import create_app\n")
    (copy / "feed" / "sideways.py").write_text("from ..consumers import sinks\n")
    (copy / "store" / "to_root.py").write_text("from volspike_funding import __version__\n")
    found = violations(copy)
    assert len(found) == 3, found
    assert any("core/upward.py:2: upward import of volspike_funding.api.app" in p for p in found)
    assert any("feed/sideways.py:1: sideways import of volspike_funding.consumers" in p for p in found)
    assert any("store/to_root.py:1: upward import of volspike_funding (store -> root)" in p for p in found)


def test_every_subpackage_names_its_public_face():
    for init in sorted((ROOT / PACKAGE).glob("*/__init__.py")):
        tree = ast.parse(init.read_text(encoding="utf-8"))
        names = [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                 if isinstance(t, ast.Name)]
        assert "__all__" in names, f"{init.relative_to(ROOT)} has no __all__"
