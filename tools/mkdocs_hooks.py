"""MkDocs hooks of the site (mkdocs.yml ``hooks:``).

- ``<!-- generated: benchmarks|cli|http -->`` in a page becomes the output of ``tools/docs_pages.py``;
- ``openapi.json`` (the service's schema) is added to the site;
- every ``guides/*.md`` the nav does not name is appended to the "Guides" section.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import docs_pages  # noqa: E402

MARKER = re.compile(r"<!-- generated: (\w+) -->")
_schema: dict = {}


def _openapi() -> dict:
    if not _schema:
        _schema.update(docs_pages.openapi())
    return _schema


def on_files(files, config):
    from mkdocs.structure.files import File

    files.append(File.generated(config, "openapi.json", content=json.dumps(_openapi(), indent=2)))
    return files


def on_nav(nav, config, files):
    from mkdocs.structure.nav import Section

    guides = next((item for item in nav.items if isinstance(item, Section) and item.title == "Guides"), None)
    if guides is None:
        return nav
    named = {p.file.src_uri for p in nav.pages}
    for file in sorted(files.documentation_pages(), key=lambda f: f.src_uri):
        if file.src_uri.startswith("guides/") and file.src_uri not in named and file.page is not None:
            file.page.parent = guides
            guides.children.append(file.page)
            nav.pages.append(file.page)
    return nav


def on_page_markdown(markdown, page, config, files):
    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name == "http":
            return docs_pages.http_markdown(_openapi())
        return docs_pages.GENERATORS[name]()

    return MARKER.sub(fill, markdown)
