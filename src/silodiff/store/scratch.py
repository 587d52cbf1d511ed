"""The store's ``tmp/`` folder: every temporary file is named for the process that writes it.

A writer stages a file (``<name>.<pid>@<host>.part``) or a folder
(``<prefix>.<pid>@<host>.<random>``) there and renames it into place.  A
process killed in between (SIGKILL, the OOM killer, a power cut) leaves the
entry behind; weights or pixels in it may hold forgotten samples.  So
``clean_stale`` removes every entry whose owner is a process of this host that
no longer runs (and every entry without an owner tag, from older versions); it
runs whenever a store is opened and before a forget.  An entry of a live
process, or of another host (a Ray worker on a shared disk), is kept.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

_OWNER = re.compile(r"\.(\d+)@([A-Za-z0-9-]+)(?:\.|$)")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:63] or "host"


def owner_tag() -> str:
    """``<pid>@<host>`` of this process."""
    return f"{os.getpid()}@{_host()}"


def part_path(tmp: Path, name: str) -> Path:
    """Where this process stages a file that will be renamed to ``name``."""
    return tmp / f"{name}.{owner_tag()}.part"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def is_stale(name: str) -> bool:
    """Whether a ``tmp/`` entry was left by a process that is gone (or carries no owner tag)."""
    m = _OWNER.search(name)
    if m is None:
        return True
    return m.group(2) == _host() and not _alive(int(m.group(1)))


def clean_stale(tmp: Path) -> list[str]:
    """Remove the entries of ``tmp`` left by dead processes; returns their names."""
    removed = []
    try:
        entries = list(tmp.iterdir())
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not is_stale(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry.name)
    return removed
