"""The top-level namespace: the public API resolves, and no module shadows a public function (issue #19, item 12:
``import silodiff.attribution`` used to replace the function ``sd.generate`` with the module ``silodiff/generate.py``)."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import silodiff


def _packages() -> list[str]:
    return ["silodiff"] + [m.name for m in pkgutil.walk_packages(silodiff.__path__, "silodiff.") if m.ispkg]


def test_no_module_shares_a_name_with_a_public_name_of_its_package():
    clashes = []
    for name in _packages():
        if name.startswith("silodiff.service"):  # routes are modules by design; the package exports no such names
            continue
        package = importlib.import_module(name)
        public = set(getattr(package, "__all__", ()))
        clashes += [f"{name}.{m.name}" for m in pkgutil.iter_modules(package.__path__) if m.name in public]
    assert clashes == []


def test_public_functions_survive_importing_every_subpackage():
    code = ("import pkgutil, importlib, silodiff as sd\n"
            "for m in pkgutil.walk_packages(sd.__path__, 'silodiff.'):\n"
            "    if not m.name.startswith(('silodiff.service', 'silodiff.jobs.ray')) and not m.name.endswith('__main__'):\n"
            "        importlib.import_module(m.name)\n"
            "import silodiff.service.image_requests\n"
            "bad = [n for n in sd.__all__ if type(getattr(sd, n)).__name__ == 'module']\n"
            "assert not bad, bad\n"
            "import silodiff.audit as audit\n"
            "assert callable(audit.fld) and callable(sd.generate) and callable(sd.compose)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def test_the_top_level_api_has_the_core_promise():
    from silodiff.unlearning import add_source, forget, plan_forget, verify_certificate

    assert (silodiff.forget, silodiff.plan_forget, silodiff.verify_certificate, silodiff.add_source) == \
        (forget, plan_forget, verify_certificate, add_source)
