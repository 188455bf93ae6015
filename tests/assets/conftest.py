"""Fixtures for asset tests: a real Dagster instance on disk and resources pointing at the
Flex simulator on loopback (the token reaches the resource only through ``dg.EnvVar``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest


@pytest.fixture
def work_dir(tmp_path: Path) -> Iterator[Path]:
    """A scratch folder on tmpfs when available: Dagster's SQLite storage commits every event,
    which is slow on a busy disk."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(dir=shm, prefix="ibpipeline-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def dagster_home(work_dir: Path) -> Path:
    return work_dir / "dagster_home"


@pytest.fixture
def instance(dagster_home: Path) -> Iterator[dg.DagsterInstance]:
    """A SQLite-backed instance (pools work, files can be grepped)."""
    dagster_home.mkdir()
    with dg.instance_for_test(temp_dir=str(dagster_home)) as inst:
        yield inst


@pytest.fixture
def data_dir(work_dir: Path) -> Path:
    return work_dir / "data"


@pytest.fixture
def flex_env(monkeypatch: pytest.MonkeyPatch, flex_token: str) -> str:
    """``IBKR_FLEX_TOKEN`` set to the simulator's token for this test only."""
    monkeypatch.setenv("IBKR_FLEX_TOKEN", flex_token)
    return flex_token
