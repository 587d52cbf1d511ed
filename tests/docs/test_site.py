"""The generated parts of the docs site and the public-API page agree with the code they describe."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import typer.main

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import docs_pages  # noqa: E402

import silodiff  # noqa: E402
from silodiff.cli.main import app  # noqa: E402


def test_the_api_page_lists_exactly_the_public_api():
    documented = re.findall(r"^::: silodiff\.(\w+)\s*$", (ROOT / "docs" / "api.md").read_text(), re.M)
    assert len(documented) == len(set(documented))
    assert set(documented) == set(silodiff.__all__)


def test_benchmarks_page_is_generated_from_the_result_files(tmp_path):
    (tmp_path / "alpha.json").write_text(json.dumps({
        "benchmark": "alpha", "command": "python bench/alpha.py", "commit": "0123456789abcdef",
        "machine": {"cpu_count": 2, "date": "today", "load_average_1min_at_start": 0.5},
        "results": {"speed": {"ratio": 1.2345678}, "runs": [1, 2]}, "notes": ["a note"],
        "table": [{"figure": "speed ratio", "value": 1.2345678, "target": "≥ 1 — met"}]}))
    page = docs_pages.benchmarks_markdown(tmp_path)
    assert "## alpha" in page and "`make bench-alpha`" in page and "0123456789ab" in page
    assert "| speed ratio | 1.235 | ≥ 1 — met |" in page and "| `speed.ratio` | 1.235 |" in page and "- a note" in page


def test_a_result_variant_names_its_own_make_target_when_the_makefile_has_one():
    fashion = {"command": "python bench/operating_point.py --data fashion --workers 3"}
    assert docs_pages._target(fashion, "operating_point-fashion") == "make bench-operating-point-fashion"
    # no bench-audit-n300 target: the script's own target runs it (with its options, given in the command)
    assert docs_pages._target({"command": "python bench/audit.py --n-train 300"}, "audit-n300") == "make bench-audit"


def test_benchmarks_page_has_a_section_per_recorded_benchmark():
    page = docs_pages.benchmarks_markdown()
    for f in (ROOT / "bench" / "results").glob("*.json"):
        assert f"## {f.stem}\n" in page


def test_cli_reference_documents_every_visible_command_and_option():
    page = docs_pages.cli_markdown()

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if path and not subs:
            yield path, cmd
        for name, sub in (subs or {}).items():
            yield from walk(sub, [*path, name])

    for path, cmd in walk(typer.main.get_command(app), []):
        section = page.split(f"## `silodiff {' '.join(path)}`\n", 1)[1].split("\n## ", 1)[0]
        for p in cmd.params:
            if p.param_type_name == "option" and not p.hidden:
                assert f"`{p.opts[0]}`" in section, (path, p.opts)
            if p.param_type_name == "option" and p.hidden:
                assert f"`{p.opts[0]}`" not in section, (path, p.opts)  # deprecated spellings stay out


def test_the_readme_stays_a_front_door():
    """At most 150 lines, and every local link it makes points at a file that exists (the long reading lives in
    docs/benchmarks.md, which the README links)."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    links = re.findall(r"\]\(((?!https?://)[^)#]+)", text)
    assert "docs/benchmarks.md" in links
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, missing
