"""All SQL lives in ``silodiff.store``: the catalog and the small table classes beside it (``api_keys``,
``forget_requests``) own their tables, schemas and statements; every other package asks them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import silodiff

ROOT = Path(silodiff.__file__).parent
SQL = re.compile(r"^\s*(SELECT\b.*\bFROM|INSERT (OR \w+ )?INTO|UPDATE \w+ SET|DELETE FROM|CREATE (TEMP )?(TABLE|INDEX)"
                 r"|BEGIN( DEFERRED| IMMEDIATE)?$|COMMIT$|ROLLBACK$|PRAGMA)", re.DOTALL)
CURSOR_CALLS = {"execute", "executemany", "executescript"}


def sql_uses(source: str) -> list[str]:
    """Where a source file runs SQL itself: cursor calls, ``catalog.db``, sqlite3, SQL text (line: what)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in CURSOR_CALLS:
            found.append(f"{node.lineno}: .{node.attr}(…)")
        elif isinstance(node, ast.Attribute) and node.attr == "db" and (
                isinstance(node.value, ast.Name) and node.value.id == "catalog"
                or isinstance(node.value, ast.Attribute) and node.value.attr == "catalog"):
            found.append(f"{node.lineno}: catalog.db")
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and any(
                (a.name if isinstance(node, ast.Import) else node.module or "").split(".")[0] == "sqlite3"
                for a in node.names):
            found.append(f"{node.lineno}: imports sqlite3")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.match(node.value):
            found.append(f"{node.lineno}: SQL text {node.value.strip()[:40]!r}")
    return found


def test_no_sql_outside_the_store():
    files = [p for p in sorted(ROOT.rglob("*.py")) if p.relative_to(ROOT).parts[0] != "store"]
    assert len(files) > 50
    outside = [f"{p.relative_to(ROOT)}:{use}" for p in files for use in sql_uses(p.read_text())]
    assert outside == []


def test_the_scan_sees_sql():
    source = ('import sqlite3\n'
              'def f(store, db):\n'
              '    store.catalog.db.execute("SELECT 1")\n'
              '    db.executemany(Q, [])\n'
              'Q = """\nUPDATE artifacts SET active = 0"""\n'
              'def g(catalog):\n    return catalog.db\n')
    assert sorted(int(u.split(":")[0]) for u in sql_uses(source)) == [1, 3, 3, 4, 5, 8]
    assert sql_uses('"""Delete every old file."""\nx = "SELECT the compartments"\nprint(x, "delete")\n') == []
