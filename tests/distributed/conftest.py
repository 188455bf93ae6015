"""Real Celery workers against the local RabbitMQ (127.0.0.1:5672) and a fresh PostgreSQL database
as the Dagster instance. Each test gets its own RabbitMQ vhost and user (random password), so
parallel test runs never share a queue. Skipped when RabbitMQ or PostgreSQL is not there."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ibpipeline import settings
from tests.postgres_db import fresh_database

psycopg2 = pytest.importorskip("psycopg2")

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def broker_url() -> Iterator[str]:
    """``pyamqp://`` URL of a new vhost on the local RabbitMQ, with a user of its own."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("no rabbitmqctl")
    name = f"ibp_{secrets.token_hex(5)}"
    password = secrets.token_hex(12)
    try:
        rabbitmqctl("add_vhost", name)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"RabbitMQ not usable: {exc.stderr!r}")
    try:
        rabbitmqctl("add_user", name, password)
        rabbitmqctl("set_permissions", "-p", name, name, ".*", ".*", ".*")
        yield f"pyamqp://{name}:{password}@127.0.0.1:5672/{name}"
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True)
        subprocess.run(["rabbitmqctl", "-q", "delete_user", name], capture_output=True)


@pytest.fixture
def pg_db() -> Iterator[str]:
    """A fresh, empty database on the local PostgreSQL, dropped afterwards."""
    with fresh_database("ibp_celery") as name:
        yield name


@pytest.fixture
def celery_env(tmp_path: Path, pg_db: str, broker_url: str, flex_token: str) -> dict[str, str]:
    """Environment of the workers and of the run: a DAGSTER_HOME with deploy/dagster.yaml
    (Postgres storage, pools limited to 1), the celery executor, the test's vhost."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_USERNAME": "postgres",
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_DB": pg_db,
        settings.EXECUTOR_ENV: "celery",
        settings.CELERY_BROKER_ENV: broker_url,
        settings.CELERY_BACKEND_ENV: "rpc://",
        settings.FLEX_TOKEN_ENV: flex_token,
    }


@dataclass
class Cluster:
    """Celery workers and run orchestrators (``dagster job execute``) started by a test, each in
    its own process group; whatever is still running at teardown is killed."""

    log_dir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    runs: list[subprocess.Popen] = field(default_factory=list)

    def start(self, name: str, env: dict[str, str], *extra: str) -> subprocess.Popen:
        """Start worker ``name`` (node ``name@<host>``, queue ``dagster``, one pool process)."""
        with (self.log_dir / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                [str(BIN / "celery"), "-A", "ibpipeline.celery_worker", "worker"]
                + ["-n", f"{name}@%h", "-Q", "dagster", "--concurrency", "1", "--loglevel", "INFO"]
                + ["--without-gossip", "--without-mingle", *extra],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for name, proc in self.procs.items():
            while b" ready." not in self.log(name):
                assert proc.poll() is None, self.log(name)[-3000:].decode(errors="replace")
                assert time.monotonic() < deadline, f"worker {name} not ready"
                time.sleep(0.2)

    def log(self, name: str) -> bytes:
        return (self.log_dir / f"{name}.log").read_bytes()

    def kill(self, name: str) -> None:
        """SIGKILL the worker's whole process group (main process and pool children)."""
        kill_group(self.procs[name])

    def run_job(
        self, env: dict[str, str], args: list[str], timeout: float
    ) -> Callable[[], subprocess.CompletedProcess]:
        """Start ``dagster job execute ARGS`` (the run's orchestrator); the returned function
        waits for it (killing it and failing after ``timeout`` s)."""
        proc = subprocess.Popen(
            [str(BIN / "dagster"), "job", "execute", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.runs.append(proc)

        def wait() -> subprocess.CompletedProcess:
            try:
                out, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_group(proc)
                out, _ = proc.communicate()
                raise AssertionError(
                    f"run still going after {timeout} s:\n{out[-4000:]!r}"
                ) from None
            text = out.decode(errors="replace")
            return subprocess.CompletedProcess(proc.args, proc.returncode, text)

        return wait

    def kill_all(self) -> None:
        for proc in [*self.runs, *self.procs.values()]:
            kill_group(proc)


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster(tmp_path)
    try:
        yield started
    finally:
        started.kill_all()
