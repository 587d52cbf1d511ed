"""A fork server for the docs examples, so each ``silodiff …`` call costs its work, not a 5-10 s import.

One process imports silodiff's command line with torch and diffusers, then forks once per call: the child
takes the caller's stdin/stdout/stderr (passed over a Unix socket), working directory, environment and
argv, runs ``silodiff.cli.main.main`` and reports its exit code.  ``client_script`` writes the ``silodiff``
executable that the examples find first on PATH.  Test infrastructure only: the examples still run the
real command line, through its real ``main``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import traceback
from pathlib import Path

CLIENT = '''#!{python} -S
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(os.environ["SILODIFF_FORKSERVER"])
msg = json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}).encode()
socket.send_fds(s, [len(msg).to_bytes(8, "big") + msg], [0, 1, 2])
code = s.recv(16)
sys.exit(int(code) if code else 1)
'''


def client_script(folder: Path) -> Path:
    """Write ``folder/silodiff``, the client that hands its call to the server named by $SILODIFF_FORKSERVER."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "silodiff"
    path.write_text(CLIENT.format(python=sys.executable))
    path.chmod(0o755)
    return path


def _recv(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    size = int.from_bytes(data[:8], "big")
    data = data[8:]
    while len(data) < size:
        data += conn.recv(size - len(data))
    return json.loads(data), fds


def _child(conn: socket.socket, request: dict, fds: list[int]) -> None:
    from silodiff.cli.main import main

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    code = 0
    try:
        main(request["argv"])
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - report it as the real command would
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    conn.sendall(str(code).encode())
    os._exit(code)


def serve(path: str) -> None:
    """Import once, then fork a child per call until killed."""
    import diffusers  # noqa: F401 - the imports every heavy command pays
    import torch  # noqa: F401

    import silodiff.cli.main  # noqa: F401
    import silodiff.composition  # noqa: F401
    import silodiff.training  # noqa: F401

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        request, fds = _recv(conn)
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() == 0:
            server.close()
            _child(conn, request, fds)
        for fd in fds:
            os.close(fd)
        conn.close()


if __name__ == "__main__":
    serve(sys.argv[1])
