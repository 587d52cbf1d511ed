"""Advisory OS file locks (``fcntl.flock``): held until released or until the process dies, SIGKILL included.

``file_lock(path)`` is re-entrant within one thread (flock locks belong to an
open file, so a second ``open`` + ``flock`` of the same path would wait on
itself): nested holders share one lock, released when the outermost exits.
Other threads and processes wait.
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_local = threading.local()


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block."""
    held: dict[str, list] = _local.__dict__.setdefault("held", {})
    key = str(Path(path).resolve())
    if key in held:
        held[key][1] += 1
    else:
        f = open(key, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except BaseException:
            f.close()
            raise
        held[key] = [f, 1]
    try:
        yield
    finally:
        held[key][1] -= 1
        if held[key][1] == 0:
            f = held.pop(key)[0]
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()


@contextmanager
def try_file_lock(path: str | Path) -> Iterator[bool]:
    """Take the lock on ``path`` if nobody holds it (yields True; also when this thread holds it already),
    else yield False at once without waiting."""
    held: dict[str, list] = _local.__dict__.setdefault("held", {})
    key = str(Path(path).resolve())
    if key in held:
        yield True
        return
    f = open(key, "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        held[key] = [f, 1]
        try:
            yield True
        finally:
            held.pop(key, None)
            fcntl.flock(f, fcntl.LOCK_UN)
    finally:
        f.close()
