"""Shared pytest fixtures: paths to the public fixtures and a running Flex Web Service simulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ibpipeline.flex.ratelimit import RateLimit
from ibpipeline.sim.flex_server import FlexSimulator
from tests.fixture_files import PUBLIC_FLEX_DIR

FLEX_TOKEN = "731054826619374025548312"  # 24 digits like a real token; grep-able in leak tests
FLEX_QUERY_ID = "800969"


def pytest_configure(config: pytest.Config) -> None:
    """Build the dbt manifest before collection: the definitions load it at import time."""
    from ibpipeline.dbt import ensure_manifest

    ensure_manifest()


@pytest.fixture
def public_flex_dir() -> Path:
    """Folder of the four real public Activity Flex XML statements."""
    return PUBLIC_FLEX_DIR


@pytest.fixture
def flex_token() -> str:
    """The token the ``flex_sim`` fixture accepts."""
    return FLEX_TOKEN


@pytest.fixture
def flex_query_id() -> str:
    """The query id the ``flex_sim`` fixture accepts."""
    return FLEX_QUERY_ID


@pytest.fixture
def flex_statement() -> bytes:
    """Bytes of a real two-account Flex statement (served by ``flex_sim``)."""
    return (PUBLIC_FLEX_DIR / "pp_file26_two_accounts.xml").read_bytes()


@pytest.fixture
def flex_sim(flex_statement: bytes) -> Iterator[FlexSimulator]:
    """A running Flex simulator on a free loopback port serving ``flex_statement`` for
    ``FLEX_TOKEN``/``FLEX_QUERY_ID``, with rate limits loose enough for fast tests (tests may
    change ``generation_polls``, ``rate_limits``, ``faults`` ... at run time)."""
    simulator = FlexSimulator(
        lambda *_: flex_statement,
        FLEX_TOKEN,
        {FLEX_QUERY_ID},
        rate_limits=(RateLimit(1000, 1.0),),
    )
    with simulator:
        yield simulator
