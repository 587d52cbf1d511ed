"""The layering of DESIGN.md, checked on every run: nothing imports upward.

    data → nn → training → store/catalog → compose/sampling → audit/unlearning/attribution → cli/service

Every ``silodiff`` import (module level or inside a function, absolute or
relative) is read from the source with ``ast``; a module may import its own
layer or a lower one.  The finer order below refines DESIGN.md's: foundations
(errors, config, plotting) under everything, ``jobs`` (running training over a
store) between the store and composition, and the memorisation defences and the
``generate`` front door above the audits they use; the demo, which calls every
feature (the service's included), sits with the CLI and the service at the top.
A new top-level module or package must be given a layer here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import silodiff

LAYERS = [
    {"errors", "config", "ids", "devices", "viz"},
    {"data"},
    {"nn"},
    {"training"},
    {"store"},
    {"jobs"},
    {"composition", "sampling"},
    {"audit", "unlearning", "interop"},
    {"defences"},
    {"sample_files"},
    {"attribution"},
    {"cli", "service", "demo", "__init__", "__main__"},
]
RANK = {name: k for k, layer in enumerate(LAYERS) for name in layer}
ROOT = Path(silodiff.__file__).parent


def _unit(parts: tuple[str, ...]) -> str:
    """The top-level unit of a module path inside the package: ``store`` for store/catalog.py."""
    return parts[0].removesuffix(".py") if parts else "__init__"


def _imports(path: Path) -> set[str]:
    """Top-level silodiff units imported by one source file."""
    rel = path.relative_to(ROOT).parts
    package = list(rel[:-1])  # the file's package, inside silodiff
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name.split(".") for a in node.names if a.name.split(".")[0] == "silodiff"]
            out |= {n[1] if len(n) > 1 else "__init__" for n in names}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.split(".")[0] == "silodiff":
                    parts = node.module.split(".")[1:]
                    out.add(parts[0] if parts else "__init__")
                continue
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            target = base + (node.module.split(".") if node.module else [])
            if target:
                out.add(target[0])
            else:  # ``from .. import name``: the package itself, or a sub-unit by that name
                out |= {a.name if (ROOT / a.name).is_dir() or (ROOT / f"{a.name}.py").exists() else "__init__"
                        for a in node.names}
    return out


def test_nothing_imports_upward():
    files = sorted(ROOT.rglob("*.py"))
    assert len(files) > 20
    unplaced = sorted({_unit(f.relative_to(ROOT).parts) for f in files} - set(RANK))
    assert not unplaced, f"give these modules a layer in tests/test_layering.py: {unplaced}"
    upward = []
    for f in files:
        unit = _unit(f.relative_to(ROOT).parts)
        for target in _imports(f) - {unit}:
            if target not in RANK:
                upward.append(f"{f.relative_to(ROOT)} imports unknown silodiff.{target}")
            elif RANK[target] > RANK[unit]:
                upward.append(f"{f.relative_to(ROOT)} ({unit}) imports {target}, a higher layer")
    assert not upward, "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    fake = tmp_path / "silodiff"
    (fake / "store").mkdir(parents=True)
    (fake / "store" / "bad.py").write_text("def f():\n    from ..service import app\n")
    monkeypatch.setitem(globals(), "ROOT", fake)
    assert _imports(fake / "store" / "bad.py") == {"service"}
