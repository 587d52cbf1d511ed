"""Generated parts of the documentation site, never hand-copied: the benchmarks page from
``bench/results/*.json``, the CLI reference from the Typer app and the HTTP routes from the OpenAPI schema.

``python tools/docs_pages.py benchmarks|cli|http|openapi`` prints one of them; the MkDocs hook
(``tools/mkdocs_hooks.py``) puts them in place of ``<!-- generated: NAME -->`` markers at build time.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


# ----------------------------------------------------------------------------- benchmarks
def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items())
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v) if len(v) <= 6 and all(not isinstance(x, (dict, list)) for x in v) \
            else f"({len(v)} values)"
    return str(v).replace("|", "\\|")


def _leaves(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Scalar figures of a nested result, as (dotted.key, value); lists of records are summarised."""
    if isinstance(d, dict):
        return [leaf for k, v in d.items() for leaf in _leaves(v, f"{prefix}.{k}" if prefix else str(k))]
    return [(prefix, d)]


def benchmarks_markdown(results: Path = RESULTS) -> str:
    """One section per ``bench/results/<name>.json``: command, machine, headline table (when the
    benchmark recorded one), notes, and every recorded figure in a collapsed block."""
    out: list[str] = []
    files = sorted(results.glob("*.json"))
    if not files:
        return "No benchmark results are recorded yet.\n"
    out += ["| benchmark | `make` target | date | machine |", "| --- | --- | --- | --- |"]
    payloads = [(f, json.loads(f.read_text())) for f in files]
    for f, p in payloads:
        m = p.get("machine", {})
        out.append(f"| [{p.get('benchmark', f.stem)}](#{_anchor(f.stem)}) | `{_target(p, f.stem)}` | {m.get('date', '?')} | "
                   f"{m.get('cpu_count', '?')} CPUs, load {m.get('load_average_1min_at_start', '?')} |")
    for f, p in payloads:
        m = p.get("machine", {})
        out += ["", f"## {f.stem}", "",
                f"Command: `{p.get('command', '?')}`" + (f" at commit `{p['commit'][:12]}`" if p.get("commit") else ""), "",
                f"Machine: {m.get('platform', '?')}, {m.get('cpu_count', '?')} CPUs, torch {m.get('torch', '?')} "
                f"({m.get('torch_threads', '?')} threads), load average at start {m.get('load_average_1min_at_start', '?')}, "
                f"{m.get('date', '?')}. Raw file: `bench/results/{f.name}`.", ""]
        if p.get("table"):
            out += ["| figure | value | target / note |", "| --- | --- | --- |"]
            out += [f"| {r['figure']} | {_fmt(r['value'])} | {r.get('target', '')} |" for r in p["table"]]
            out.append("")
        else:  # results written before the JSON kept the headline table: the same table, from the .md beside it
            out += [*_md_table(f.with_suffix(".md")), ""]
        out += [f"- {_fmt(n)}" for n in p.get("notes", [])]
        leaves = _leaves(p.get("results", {}))
        out += ["", f'??? note "All {len(leaves)} recorded figures"', "",
                "    | figure | value |", "    | --- | --- |"]
        out += [f"    | `{k}` | {_fmt(v)} |" for k, v in leaves]
    return "\n".join(out) + "\n"


def _md_table(md: Path) -> list[str]:
    """The headline table that ``bench/common.write_results`` wrote into ``<name>.md`` in the same run."""
    if not md.exists():
        return []
    lines = md.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("| figure |")), None)
    if start is None:
        return []
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def _anchor(stem: str) -> str:
    return stem.lower().replace("_", "-")


@functools.cache
def _makefile() -> str:
    path = ROOT / "Makefile"
    return path.read_text() if path.exists() else ""


def _target(payload: dict, stem: str = "") -> str:
    """The Makefile target that makes this result: ``bench-<file stem>`` when the Makefile has one (a variant
    such as ``operating_point-fashion``), else the one named for the script."""
    variant = "bench-" + stem.replace("_", "-")
    if stem and f"\n{variant}:" in _makefile():
        return f"make {variant}"
    script = payload.get("command", "").split()[1] if len(payload.get("command", "").split()) > 1 else ""
    name = Path(script).stem.replace("_bench", "").replace("_", "-")
    return f"make bench-{name}" if name else "?"


# ----------------------------------------------------------------------------- CLI reference
def cli_markdown() -> str:
    """Every command of the Typer app: usage, help and options (hidden options left out)."""
    import typer.main

    from silodiff.cli.main import app

    root = typer.main.get_command(app)
    out: list[str] = []

    def walk(cmd: Any, path: list[str]) -> None:
        subs = getattr(cmd, "commands", None)
        if path and not subs:
            out.extend(_command_section(cmd, path))
        for name, sub in (subs or {}).items():
            if not getattr(sub, "hidden", False):
                walk(sub, [*path, name])

    out.extend(_command_section(root, [], group=True))
    walk(root, [])
    return "\n".join(out) + "\n"


def _command_section(cmd: Any, path: list[str], group: bool = False) -> list[str]:
    title = " ".join(["silodiff", *path])
    args = [p for p in cmd.params if p.param_type_name == "argument"]
    usage = " ".join([title, *[f"{a.name.upper()}" for a in args], "[OPTIONS]"])
    lines = [f"## `{title}`" if not group else "## Global options", "", (cmd.help or "").strip(), ""]
    if not group:
        lines += ["```text", usage, "```", ""]
    rows = []
    for p in cmd.params:
        if getattr(p, "hidden", False):
            continue
        if p.param_type_name == "argument":
            rows.append((f"`{p.name.upper()}`", "argument", "", getattr(p, "help", "") or ""))
            continue
        names = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
        default = "" if p.default is None or p.default is False or p.default == () or p.required \
            else f"`{_fmt(p.default)}`"
        envvar = f" (env `{p.envvar}`)" if p.envvar else ""
        kind = "flag" if getattr(p, "is_flag", False) else ("list" if p.multiple else _type_name(p))
        rows.append((names, kind + (" (required)" if p.required else ""), default, (p.help or "") + envvar))
    if rows:
        lines += ["| option | kind | default | meaning |", "| --- | --- | --- | --- |"]
        lines += [f"| {a} | {b} | {c} | {d.replace('|', '/')} |" for a, b, c, d in rows]
        lines.append("")
    return lines


def _type_name(p: Any) -> str:
    annotation = getattr(getattr(p, "type_descriptor", None), "annotation", None)  # Typer ≥ 0.20
    if annotation is not None:
        name = getattr(annotation, "__name__", str(annotation)).replace(" | None", "").replace("Optional[", "").rstrip("]")
    else:  # older Typer: a click ParamType
        name = getattr(getattr(p, "type", None), "name", "") or "text"
    return {"integer": "int", "str": "text", "string": "text", "Path": "path", "PosixPath": "path", "boolean": "flag",
            "bool": "flag"}.get(name, name.lower())


# ----------------------------------------------------------------------------- HTTP API
def openapi() -> dict:
    """The service's OpenAPI schema, from the real app over an empty temporary store."""
    import tempfile

    from silodiff.service import Settings, create_app
    from silodiff.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "st")
        return create_app(Settings(store=store.root), store).openapi()


def http_markdown(schema: dict | None = None) -> str:
    schema = schema or openapi()
    lines = ["| method | path | summary |", "| --- | --- | --- |"]
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            summary = (op.get("summary") or op.get("description") or "").splitlines()[0] if op else ""
            lines.append(f"| `{method.upper()}` | `{path}` | {summary} |")
    return "\n".join(lines) + "\n"


GENERATORS = {"benchmarks": benchmarks_markdown, "cli": cli_markdown, "http": http_markdown,
              "openapi": lambda: json.dumps(openapi(), indent=2)}

if __name__ == "__main__":
    sys.stdout.write(GENERATORS[sys.argv[1]]())
