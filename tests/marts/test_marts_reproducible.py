"""Identical normalized data gives bit-identical marts (issue 10, item 4).

The simulated world's statement (several accounts, USD/EUR/CHF bases, so the household `ALL`
converts) is built twice, in two data dirs holding the same Parquet files; every mart table
of one equals the other's row for row, bit for bit (EXCEPT in both directions, which compares
DOUBLEs exactly, and the sum of the rows' hashes).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from ibpipeline.flex.parse import parse_statement
from ibpipeline.flex.positions import reconstruct_daily_positions
from ibpipeline.sim.flex_statement import render_statement
from ibpipeline.world import World

from .normalized import PROJECT, dbt_build
from .test_marts_world import END, START, TABLES, write_normalized

pytestmark = pytest.mark.slow

MARTS = sorted(p.stem for p in (PROJECT / "models" / "marts").glob("*.sql"))
PER_ACCOUNT_ONLY = {"corporate_actions_log", "realized_pnl_lots"}  # no household rows by design
NOT_PER_ACCOUNT = {"securities_history"}  # keyed by conid: an instrument, not an account
EVENT_DRIVEN = {"corporate_actions_log", "income_accruals", "realized_pnl_lots"}
"""Marts that stay empty in a world without corporate actions, accruals or closed-lot rows."""


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    world = World(seed=11, n_accounts=4, inception=START)
    assert len({a.base_currency for a in world.accounts}) > 1
    parsed = parse_statement(
        render_statement(world, [a.account_id for a in world.accounts], START, END)
    )
    first = tmp_path_factory.mktemp("first")
    for name in TABLES:
        write_normalized(first, name, parsed.tables[name])
    write_normalized(first, "positions_daily", reconstruct_daily_positions(parsed))
    second = tmp_path_factory.mktemp("second")
    shutil.copytree(first / "normalized", second / "normalized")
    dbt_build(first)
    dbt_build(second)
    return first, second


def test_every_mart_is_bit_identical_across_identical_runs(two_builds) -> None:
    first, second = two_builds
    with duckdb.connect() as con:
        con.execute(f"attach '{first / 'ibpipeline.duckdb'}' as a (read_only)")
        con.execute(f"attach '{second / 'ibpipeline.duckdb'}' as b (read_only)")
        for mart in MARTS:
            n = con.execute(f"select count(*) from a.{mart}").fetchone()[0]
            assert n > 0 or mart in EVENT_DRIVEN, mart
            if mart not in NOT_PER_ACCOUNT:
                household = con.execute(
                    f"select count(*) from a.{mart} where account_id = 'ALL'"
                ).fetchone()[0]
                assert household > 0 or mart in PER_ACCOUNT_ONLY | EVENT_DRIVEN, mart
            for x, y in (("a", "b"), ("b", "a")):
                diff = con.execute(
                    f"select count(*) from (select * from {x}.{mart} except all "
                    f"select * from {y}.{mart})"
                ).fetchone()[0]
                assert diff == 0, (mart, x, y, diff)
            digests = [
                con.execute(
                    f"select sum(hash(t)), count(*) from (select * from {db}.{mart}) as t"
                ).fetchone()[0]
                for db in ("a", "b")
            ]
            assert digests[0] == digests[1], mart
