"""Fixtures for the orchestration tests: an on-disk Dagster instance, a simulated world served by
the real Flex simulator on loopback (its account list can change between requests), and the
project's jobs/schedules/sensors bound to resources pointing at them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from ibpipeline import settings
from ibpipeline.automation.jobs import flex_daily_job, inbox_import_job
from ibpipeline.flex.ratelimit import RateLimit
from ibpipeline.resources import DataDirResource, FlexResource
from ibpipeline.sim.flex_server import FlexSimulator
from ibpipeline.sim.flex_statement import render_statement
from ibpipeline.world import World

QUERY_ID = "800969"
INCEPTION = date(2024, 1, 2)


class WorldSource:
    """Statement source of the simulator: ``world`` restricted to ``account_ids`` (mutable), with
    optional ``dateClosed`` values per account; counts statements rendered."""

    def __init__(self, world: World, account_ids: list[str]) -> None:
        self.world = world
        self.account_ids = list(account_ids)
        self.date_closed: dict[str, str] = {}
        self.rendered = 0

    def __call__(self, query_id, from_date, to_date, period_days) -> bytes:
        self.rendered += 1
        xml = render_statement(self.world, self.account_ids, from_date, to_date).decode()
        for account_id, closed in self.date_closed.items():
            xml = close_account(xml, account_id, closed)
        return xml.encode()


def close_account(xml: str, account_id: str, closed: str) -> str:
    """Set ``dateClosed`` (yyyyMMdd) in the AccountInformation element of ``account_id``."""
    lines = xml.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("<AccountInformation ") and f'accountId="{account_id}"' in line:
            lines[i] = line.replace('dateClosed=""', f'dateClosed="{closed}"', 1)
            return "\n".join(lines)
    raise AssertionError(f"no AccountInformation line for {account_id}")


@pytest.fixture(scope="session")
def world() -> World:
    return World(seed=5, n_accounts=3, inception=INCEPTION)


@pytest.fixture
def world_accounts(world) -> list[str]:
    return [a.account_id for a in world.accounts]


@pytest.fixture
def source(world, world_accounts) -> WorldSource:
    return WorldSource(world, world_accounts)


@pytest.fixture
def sim(source, flex_token) -> Iterator[FlexSimulator]:
    simulator = FlexSimulator(source, flex_token, {QUERY_ID}, rate_limits=(RateLimit(1000, 1.0),))
    with simulator:
        yield simulator


def make_resources(sim: FlexSimulator | None, data_dir: Path) -> dict:
    """Resources pointing at ``sim`` (None: a closed loopback port, for runs that never fetch)."""
    return {
        "flex": FlexResource(
            token=dg.EnvVar(settings.FLEX_TOKEN_ENV),
            query_id=QUERY_ID,
            base_url=sim.base_url if sim is not None else "http://127.0.0.1:9",
            first_poll_delay_s=0.0,
            poll_interval_s=0.01,
            client_rate_limit=False,
        ),
        "data_dir": DataDirResource(path=str(data_dir)),
    }


def make_defs(
    sim: FlexSimulator | None, data_dir: Path, schedules=(), sensors=()
) -> dg.Definitions:
    from ibpipeline.assets import flex_assets

    resources = make_resources(sim, data_dir)
    return dg.Definitions(
        assets=flex_assets,
        jobs=[flex_daily_job, inbox_import_job],
        schedules=list(schedules),
        sensors=list(sensors),
        resources=resources,
    )


@pytest.fixture
def defs(sim, data_dir, flex_env) -> dg.Definitions:
    return make_defs(sim, data_dir)
