"""``ibpipeline-dbt`` through a warm dbt server (``ibpipeline.dbt_zygote``): the same output,
artifacts and exit statuses as dbt run in the caller; a dbt never outlives its caller; the server
is private to the user and leaves when idle."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ibpipeline import dbt_zygote
from ibpipeline.dbt import DBT_EXECUTABLE, FAST_EXIT_DBT, PROJECT_DIR

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def processes_with(text: str) -> dict[int, int]:
    """pid -> parent pid of every process whose command line contains ``text``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if text in cmdline:
                found[int(entry.name)] = ppid
    return found


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return out


def wait_for(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def runtime(monkeypatch):
    """A private ``$XDG_RUNTIME_DIR`` (short: a socket path has at most 107 bytes); the servers
    started under it are stopped afterwards."""
    folder = tempfile.mkdtemp(prefix="ibpz-", dir="/tmp")
    monkeypatch.setenv("XDG_RUNTIME_DIR", folder)
    monkeypatch.delenv(dbt_zygote.ZYGOTE_ENV, raising=False)
    yield folder
    for pid in processes_with(folder):
        with_children = [pid, *children_of(pid)]
        for p in with_children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


def start_server(path: str) -> int:
    dbt_zygote.start_server(path)
    assert wait_for(lambda: os.path.exists(path)), "the server did not start"
    (pid,) = processes_with(f"serve {path}")
    return pid


def parse_args(target: Path) -> list[str]:
    return [
        "parse", "--project-dir", str(PROJECT_DIR), "--profiles-dir", str(PROJECT_DIR),
        "--target-path", str(target), "--log-path", str(target),
    ]  # fmt: skip


def test_dbt_through_the_server_gives_what_dbt_gives(runtime, tmp_path):
    path = dbt_zygote.socket_path()
    assert path.startswith(runtime)

    def fast(*args: str, cwd: Path = PROJECT_DIR) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(FAST_EXIT_DBT), *args], capture_output=True, text=True, timeout=300, cwd=cwd
        )

    first = fast(*parse_args(tmp_path / "first"))  # no server yet: dbt runs in the caller
    assert first.returncode == 0, first.stdout + first.stderr
    assert wait_for(lambda: os.path.exists(path)), "the first call did not start a server"
    server = next(iter(processes_with(f"serve {path}")))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700

    # the request is served: run() returns the child's status (None would mean "not served")
    served = subprocess.run(
        [sys.executable, "-c", "import sys; from ibpipeline import dbt_zygote; "
         "print('STATUS', dbt_zygote.run(['ibpipeline-dbt', *sys.argv[1:]]))",
         *parse_args(tmp_path / "served")],
        capture_output=True, text=True, timeout=300, cwd=PROJECT_DIR,
    )  # fmt: skip
    assert "STATUS 0" in served.stdout, served.stdout + served.stderr
    manifests = [
        json.loads((tmp_path / name / "manifest.json").read_text()) for name in ("first", "served")
    ]
    assert manifests[0]["nodes"].keys() == manifests[1]["nodes"].keys()
    assert "model.ibpipeline.daily_nav" in manifests[1]["nodes"]
    assert "leaked semaphore" not in served.stdout + served.stderr

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "dbt_project.yml").write_text("name: [unclosed\n")
    plain = subprocess.run(
        [DBT_EXECUTABLE, "parse", "--project-dir", str(broken)], capture_output=True, cwd=broken
    )
    for args, cwd, expected in (
        (("parse", "--project-dir", str(broken)), broken, plain.returncode),
        (("no-such-command",), PROJECT_DIR, 2),
    ):
        done = fast(*args, cwd=cwd)
        assert done.returncode == expected != 0
    assert "No such command 'no-such-command'" in fast("no-such-command").stderr
    assert server in processes_with(f"serve {path}")  # the same server served every call


def test_a_dbt_never_outlives_its_caller(runtime, tmp_path):
    path = dbt_zygote.socket_path()
    server = start_server(path)
    slow = ["show", "--inline", "select count(*) from range(40000000000) t(i) where i % 7 = 3"]
    env = {**os.environ, "IBPIPELINE_DATA_DIR": str(tmp_path), "DBT_TARGET": "duckdb"}
    for how in ("SIGKILL", "SIGTERM"):
        caller = subprocess.Popen(
            [str(FAST_EXIT_DBT), *slow, "--project-dir", str(PROJECT_DIR),
             "--profiles-dir", str(PROJECT_DIR), "--target-path", str(tmp_path / how)],
            cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert wait_for(lambda: children_of(server)), "no dbt child of the server"
        (child,) = children_of(server)
        time.sleep(1.0)  # dbt is running the query
        assert caller.poll() is None
        caller.send_signal(getattr(signal, how))
        caller.wait(timeout=30)
        assert wait_for(lambda c=child: c not in children_of(server), timeout=20), how
        if how == "SIGTERM":  # forwarded: the child ended by it, the caller reports a failure
            assert caller.returncode != 0
            assert b"ended without an exit status" in caller.stderr.read()
    assert os.path.exists(path)  # the server itself goes on


def test_the_server_leaves_when_idle(runtime):
    path = os.path.join(runtime, "idle", "z.sock")
    done = subprocess.run(
        [sys.executable, "-c",
         f"from ibpipeline import dbt_zygote; dbt_zygote.serve({path!r}, idle_s=0.5)"],
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0
    assert not os.path.exists(path)
    # no server: run() says so, and dbt is run by the caller instead
    assert dbt_zygote.run(["ibpipeline-dbt", "--version"], path) is None
