"""Every code example on the docs site (and in the README) runs, so the docs cannot rot.

The convention: the ```python and ```bash blocks of one page run in order in a fresh temporary directory
(python blocks share one namespace, like a notebook; bash blocks run through ``bash -e`` with the venv's
``silodiff`` first on PATH).  A block with ``<!-- no-run -->`` on the line right before it is skipped
(GPU, long jobs, a server left running).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*$")
NO_RUN = "<!-- no-run -->"

DRIVER = '''
import json, subprocess, sys
if __name__ == "__main__":
    ns = {"__name__": "__main__"}
    for b in json.load(open(sys.argv[1])):
        print(f"--- {b['where']} ({b['lang']})", flush=True)
        if b["lang"] == "python":
            exec(compile(b["code"], b["where"], "exec"), ns)
        else:
            subprocess.run(["bash", "-e", "-c", b["code"]], check=True)
'''


def blocks(text: str, where: str) -> list[dict]:
    """The runnable blocks of a page: (lang, code, where), in order; ``no-run`` ones and other languages left out."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start = m["indent"], m["lang"], i
        i += 1
        body = []
        while i < len(lines) and not re.match(rf"^{re.escape(indent)}```\s*$", lines[i]):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1
        skipped = start > 0 and lines[start - 1].strip() == NO_RUN
        if lang in ("python", "bash") and not skipped:
            out.append({"lang": lang, "code": "\n".join(body) + "\n", "where": f"{where}:{start + 1}"})
    return out


def test_the_parser_follows_the_convention():
    page = "text\n```python\nx = 1\n```\n<!-- no-run -->\n```bash\nexit 1\n```\n    ```bash\n    echo hi\n    ```\n```text\nno\n```\n"
    assert [(b["lang"], b["code"]) for b in blocks(page, "p")] == [("python", "x = 1\n"), ("bash", "echo hi\n")]


@pytest.fixture(scope="module")
def forkserver(tmp_path_factory):
    """``silodiff`` for the examples: the real command line, forked from one process that imported it once
    (``forkserver.py``): ~50 heavy commands would otherwise spend minutes importing torch and diffusers."""
    folder = tmp_path_factory.mktemp("forkserver")
    sock = str(folder / "s")
    env = dict(os.environ, MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("forkserver.py")), sock], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        sys.path.insert(0, str(Path(__file__).parent))
        from forkserver import client_script

        client_script(folder / "bin")
        yield {"SILODIFF_FORKSERVER": sock, "bin": str(folder / "bin")}
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_examples_run(page, tmp_path, forkserver):
    runnable = blocks(page.read_text(), str(page.relative_to(ROOT)))
    if not runnable:
        pytest.skip("no runnable examples on this page")
    (tmp_path / ".blocks.json").write_text(json.dumps(runnable))
    (tmp_path / ".driver.py").write_text(DRIVER)
    path = os.pathsep.join([forkserver["bin"], str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = dict(os.environ, PATH=path, SILODIFF_FORKSERVER=forkserver["SILODIFF_FORKSERVER"],
               MPLBACKEND="Agg", PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, ".driver.py", ".blocks.json"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, f"{page.name}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
