"""A warm dbt: ``ibpipeline-dbt`` runs each dbt command in a process forked from a server that
has already imported dbt, instead of importing dbt itself (~1.5 s of a daily ``dbt build``'s
~6 s; bench/README.md, session 10).

- **The server** (``python -m ibpipeline.dbt_zygote serve``) imports dbt-core and the DuckDB
  adapter, then listens on a Unix socket private to the user (mode 0600 in a 0700 folder under
  ``$XDG_RUNTIME_DIR`` or the temp folder). The socket's name hashes the venv, the Python and the
  versions of dbt-core, dbt-duckdb and duckdb, ``$PYTHONPATH`` and this file's mtime: an upgrade
  gets a new server, never an old one's modules. One server per name (an ``flock``); it leaves after
  ``$IBPIPELINE_DBT_ZYGOTE_IDLE_S`` seconds without a request (default 3600; 0 = never).
- **A request** (``run``, from ``ibpipeline.dbt_main``) hands the server the caller's stdin,
  stdout and stderr (``SCM_RIGHTS``), argv, working folder and environment. The server forks; the
  child takes them over and runs dbt's command line exactly as ``ibpipeline-dbt`` would
  (``dbt_main.run_dbt``), then reports its exit status. The caller stays the process its parent
  started: it forwards SIGINT, SIGTERM and SIGHUP to the child, and when the caller dies (its
  parent ended it with ``kill -9`` or ``PR_SET_PDEATHSIG``) the child kills itself, so a dbt
  never outlives the step that started it.
- **No server yet** (first run, after the idle time, ``IBPIPELINE_DBT_ZYGOTE=0`` to turn it off,
  any error before the child started): the caller runs dbt itself, as before, and starts a server
  for the next call.

Nothing of dbt is shared between requests: each child is forked from the server, which only
imported modules and never ran dbt. Standard library only (the caller must start fast).
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import signal
import socket
import struct
import sys
import tempfile

ZYGOTE_ENV = "IBPIPELINE_DBT_ZYGOTE"
IDLE_ENV = "IBPIPELINE_DBT_ZYGOTE_IDLE_S"
DEFAULT_IDLE_S = 3600.0
WARM_MODULES = (
    "dbt.cli.main",
    "dbt.task.build",
    "dbt.parser.manifest",
    "dbt.adapters.duckdb",
    "dbt.adapters.duckdb.impl",
)
"""What the server imports before it serves: dbt's command line, the build task, the parser
and the DuckDB adapter (what every ``dbt build`` of the project imports)."""
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_CONNECT_TIMEOUT_S = 5.0


def enabled() -> bool:
    """Whether ``ibpipeline-dbt`` uses a server (``$IBPIPELINE_DBT_ZYGOTE`` not ``0``, Linux)."""
    flag = os.environ.get(ZYGOTE_ENV, "1").strip().lower()
    return sys.platform.startswith("linux") and flag not in ("0", "false", "no", "off")


def _stamp() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [os.path.realpath(sys.prefix), sys.version, str(os.stat(__file__).st_mtime_ns)]
    parts.append(os.environ.get("PYTHONPATH", ""))  # where the server's modules come from
    for name in ("dbt-core", "dbt-duckdb", "duckdb"):
        try:
            parts.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} missing")
    return "\0".join(parts)


def socket_path() -> str:
    """The server's socket for this venv, Python and dbt versions (see the module doc)."""
    import hashlib

    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    key = hashlib.sha256(_stamp().encode()).hexdigest()[:16]
    return os.path.join(base, f"ibpipeline-dbt-{os.getuid()}", f"{key}.sock")


# --- the caller -----------------------------------------------------------------------------


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def run(argv: list[str], path: str | None = None) -> int | None:
    """Run dbt with ``argv`` in a child of the server; its exit status, or None when no server
    took the request (nothing was run: run dbt here)."""
    path = path or socket_path()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(_CONNECT_TIMEOUT_S)
        conn.connect(path)
        body = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        fds = array.array("i", [0, 1, 2])
        conn.sendmsg(
            [struct.pack("!I", len(body)) + body],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())],
        )
        started = _recv_exact(conn, 5)
        if len(started) != 5 or started[:1] != b"P":
            return None
        child = struct.unpack("!I", started[1:])[0]
    except OSError:
        conn.close()
        return None
    conn.settimeout(None)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(OSError):
            conn.sendall(b"S" + bytes([signum]))

    for signum in _FORWARDED:
        signal.signal(signum, forward)
    while True:
        try:
            status = _recv_exact(conn, 5)
            break
        except InterruptedError:
            continue
    if len(status) == 5 and status[:1] == b"X":
        return struct.unpack("!i", status[1:])[0]
    print(f"ibpipeline-dbt: dbt (pid {child}) ended without an exit status", file=sys.stderr)
    return 1


def start_server(path: str | None = None) -> None:
    """Start a server in the background (detached; returns at once)."""
    import subprocess

    subprocess.Popen(
        [sys.executable, "-m", "ibpipeline.dbt_zygote", "serve", path or socket_path()],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


# --- the server -----------------------------------------------------------------------------


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    conn.settimeout(_CONNECT_TIMEOUT_S)
    fds = array.array("i")
    data, ancdata, _flags, _addr = conn.recvmsg(1 << 16, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    if len(data) < 4:
        raise OSError("short request")
    size = struct.unpack("!I", data[:4])[0]
    body = data[4:] + _recv_exact(conn, size - (len(data) - 4))
    if len(fds) != 3 or len(body) != size:
        for fd in fds:
            os.close(fd)
        raise OSError("incomplete request")
    return json.loads(body), list(fds)


def _watch(conn: socket.socket) -> None:
    """In the child: forward the caller's signals; end when the caller is gone."""
    while True:
        try:
            message = _recv_exact(conn, 2)
        except OSError:
            message = b""
        if len(message) == 2 and message[:1] == b"S":
            os.kill(os.getpid(), message[1])
            continue
        os.kill(os.getpid(), signal.SIGKILL)  # the caller died: so does this dbt


def _child(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """Become the caller's dbt: its stdio, folder, environment and argv; never returns."""
    import io
    import threading

    code = 1
    try:
        for signum in (signal.SIGCHLD, *_FORWARDED):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = list(request["argv"])
        unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
        for name, fd in (("stdin", 0), ("stdout", 1), ("stderr", 2)):
            raw = io.FileIO(fd, "r" if fd == 0 else "w", closefd=False)
            tty = raw.isatty()
            stream = io.TextIOWrapper(
                io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw),
                encoding="utf-8",
                errors="backslashreplace" if fd == 2 else "strict",
                line_buffering=fd != 0 and (tty or fd == 2),
                write_through=unbuffered and fd != 0,
            )
            setattr(sys, name, stream)
            setattr(sys, f"__{name}__", stream)
        conn.settimeout(None)
        conn.sendall(b"P" + struct.pack("!I", os.getpid()))
        threading.Thread(target=_watch, args=(conn,), daemon=True).start()
        from ibpipeline.dbt_main import finish, run_dbt

        code = run_dbt()
        finish()
        conn.sendall(b"X" + struct.pack("!i", code))
    finally:
        os._exit(code)


def serve(path: str, idle_s: float | None = None) -> None:
    """Import dbt, then serve requests on ``path`` until idle for ``idle_s`` seconds."""
    import fcntl
    import importlib

    if idle_s is None:
        idle_s = float(os.environ.get(IDLE_ENV) or DEFAULT_IDLE_S)
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    if os.stat(folder).st_uid != os.getuid():
        raise PermissionError(f"{folder} belongs to another user")
    lock = open(path + ".lock", "w")  # noqa: SIM115 (held while serving)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another server serves this path
    for module in (*WARM_MODULES, "ibpipeline.dbt_main"):
        importlib.import_module(module)
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        server.bind(path)
    finally:
        os.umask(old_umask)
    server.listen(16)
    server.settimeout(idle_s or None)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    try:
        while True:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                return
            try:
                request, fds = _receive(conn)
            except (OSError, ValueError):
                conn.close()
                continue
            pid = os.fork()
            if pid == 0:
                server.close()
                lock.close()
                _child(conn, request, fds)
            for fd in fds:
                os.close(fd)
            conn.close()
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        server.close()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "serve":
        serve(args[1])
        return
    raise SystemExit("usage: python -m ibpipeline.dbt_zygote serve <socket path>")


if __name__ == "__main__":
    main()
