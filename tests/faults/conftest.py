"""Fixtures of the fault-matrix tests: a Dagster instance on disk and a data folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest


@pytest.fixture
def dagster_home(tmp_path: Path) -> Path:
    return tmp_path / "dagster_home"


@pytest.fixture
def instance(dagster_home: Path) -> Iterator[dg.DagsterInstance]:
    """A SQLite-backed instance whose files can be grepped."""
    dagster_home.mkdir()
    with dg.instance_for_test(temp_dir=str(dagster_home)) as inst:
        yield inst


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def flex_env(monkeypatch: pytest.MonkeyPatch, flex_token: str) -> str:
    """``IBKR_FLEX_TOKEN`` set to the simulator's token for this test only."""
    monkeypatch.setenv("IBKR_FLEX_TOKEN", flex_token)
    return flex_token
