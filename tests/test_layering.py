"""The layering of silodiff, checked on every run: nothing imports upward, and no two modules import each other.

The layers, lowest first (a module may import its own layer or a lower one):

    errors, config, ids, devices, viz     foundations, under everything
    data                                  datasets yield (x, label, sample_id, source)
    nn                                    denoisers, classifiers, adapters
    training                              the one training loop and its hooks
    store                                 catalog (SQLite), artifacts, lineage
    jobs                                  slice-by-slice training over a store, on a backend
    composition, sampling                 composed denoisers, samplers
    audit, unlearning, interop            quality and privacy audits, forgetting, diffusers export
    defences                              memorisation defences (use the audits)
    sample_files                          ``silodiff sample``: a store's samples to PNG + npz
    attribution                           compartment and unit attribution
    cli, service, demo, the package       thin layers over the library; the demo calls every feature

Every ``silodiff`` import (module level or inside a function, absolute or
relative) is read from the source with ``ast``.  A new top-level module or
package must be given a layer here.

Within and across the layers, the import graph between *modules* must have no
circle, imports inside functions included (a function-level import that closes
a circle only hides it).  A package's ``__init__`` importing its submodules is
an edge like any other; a name imported from a package resolves to the
submodule the ``__init__`` takes it from, so ``from ..store import Store`` is an
edge to ``silodiff.store.store``.
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
    (fake / "store" / "bad.py").write_text("import json\n\ndef f():\n    from ..service import app\n")
    (fake / "store" / "worse.py").write_text("class A:\n    def f(self):\n        import silodiff.cli.main\n")
    monkeypatch.setitem(globals(), "ROOT", fake)
    assert _imports(fake / "store" / "bad.py") == {"service"}  # inside a function
    assert _imports(fake / "store" / "worse.py") == {"cli"}  # inside a method, absolute


# -- the module graph -------------------------------------------------------------------------------------------


def _module_name(path: Path) -> str:
    """``silodiff.store.catalog`` for store/catalog.py, ``silodiff.store`` for store/__init__.py."""
    parts = [ROOT.name, *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_package(modules: dict[str, Path], name: str) -> bool:
    return name in modules and modules[name].name == "__init__.py"


def _origin(modules: dict[str, Path], package: str, name: str, seen: frozenset = frozenset()) -> str:
    """The module a name imported from ``package`` comes from: a submodule by that name, the submodule the
    package's ``__init__`` imports it from (followed through nested packages), else the package itself."""
    if f"{package}.{name}" in modules:
        return f"{package}.{name}"
    if not _is_package(modules, package) or package in seen:
        return package
    for node in ast.parse(modules[package].read_text()).body:
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            source = _absolute(package.split("."), node, is_package=True)
            if source is not None and source in modules:
                original = next(a.name for a in node.names if (a.asname or a.name) == name)
                return _origin(modules, source, original, seen | {package})
    return package


def _absolute(package: list[str], node: ast.ImportFrom, is_package: bool = False) -> str | None:
    """The absolute module an ``ImportFrom`` reads (None outside silodiff); ``package``: the importer's package."""
    if node.level == 0:
        return node.module if node.module and node.module.split(".")[0] == ROOT.name else None
    base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
    return ".".join(base + (node.module.split(".") if node.module else []))


def module_graph() -> dict[str, set[str]]:
    """silodiff module → the silodiff modules it imports (module level and inside functions)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        out = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out |= {a.name for a in node.names if a.name.split(".")[0] == ROOT.name and a.name in modules}
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(package, node)
                if source is not None:
                    out |= {_origin(modules, source, a.name) for a in node.names if a.name != "*"}
        graph[name] = {m for m in out if m in modules} - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph as a path ``[a, b, …, a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_no_two_modules_import_each_other():
    graph = module_graph()
    assert len(graph) > 20 and graph["silodiff.jobs"]  # the package __init__ re-exports count
    cycle = find_cycle(graph)
    assert cycle is None, "an import circle: " + " → ".join(cycle)


def test_the_check_sees_a_circle(tmp_path, monkeypatch):
    fake = tmp_path / "silodiff"
    (fake / "jobs").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "jobs" / "__init__.py").write_text("from .backends import run_jobs\nfrom .ray import run_ray\n")
    (fake / "jobs" / "backends.py").write_text("def run_jobs():\n    from .ray import run_ray\n")
    (fake / "jobs" / "ray.py").write_text("from . import backends\n")  # a sibling through the package
    (fake / "jobs" / "slices.py").write_text("from ..jobs import run_jobs\n")  # a name the package re-exports
    monkeypatch.setitem(globals(), "ROOT", fake)
    graph = module_graph()
    assert graph["silodiff.jobs.slices"] == {"silodiff.jobs.backends"}
    assert graph["silodiff.jobs"] == {"silodiff.jobs.backends", "silodiff.jobs.ray"}
    assert find_cycle(graph) == ["silodiff.jobs.backends", "silodiff.jobs.ray", "silodiff.jobs.backends"]
    (fake / "jobs" / "ray.py").write_text("import json\n")
    assert find_cycle(module_graph()) is None
