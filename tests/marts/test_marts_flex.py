"""dbt marts on real IBKR Flex statements parsed by ibpipeline.flex.parse."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from .normalized import PUBLIC_FLEX, dbt_build, query, write_parsed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, pa.Table]]]:
    """Both statements in one data dir (different accounts), one dbt build."""
    data_dir = tmp_path_factory.mktemp("flex")
    tables = {
        name: write_parsed(data_dir, PUBLIC_FLEX / f"{name}.xml")
        for name in ("pp_file17_one_day_many_sections", "opensteuerauszug_full_year_2025")
    }
    dbt_build(data_dir)
    return data_dir, tables


def test_cumulative_twr_equals_ibkr_change_in_nav_twr(built) -> None:
    data_dir, tables = built
    change = tables["pp_file17_one_day_many_sections"]["change_in_nav"].to_pylist()
    assert change, "pp_file17 carries a ChangeInNAV row"
    for row in change:
        got = query(
            data_dir,
            f"""
            select product(1 + daily_return) - 1 as twr, count(daily_return) as n
            from daily_returns where account_id = '{row["account_id"]}'
              and date between '{row["from_date"]}' and '{row["to_date"]}'""",
        ).iloc[0]
        assert got["n"] == (row["to_date"] - row["from_date"]).days + 1
        assert got["twr"] * 100 == pytest.approx(float(row["twr_pct"]), abs=0.01)  # 1 bp
        assert got["twr"] * 100 == pytest.approx(float(row["twr_pct"]), abs=1e-8)  # in fact exact


def test_deposits_equal_the_cash_report_without_summary_duplicates(built) -> None:
    data_dir, tables = built
    parsed = tables["opensteuerauszug_full_year_2025"]
    base = [r for r in parsed["cash_balances"].to_pylist() if r["currency"] == "BASE_SUMMARY"][0]
    external = query(
        data_dir,
        "select sum(amount_base) as ext, count(*) as n from "
        "stg_cash_transactions where account_id = 'U9999999' "
        "and flow_kind = 'external'",
    ).iloc[0]
    assert float(external["ext"]) == pytest.approx(
        float(base["deposits"] + base["withdrawals"]), abs=0.01
    )
    detail = [
        r for r in parsed["cash_transactions"].to_pylist() if r["level_of_detail"] == "DETAIL"
    ]
    n_detail = query(
        data_dir, "select count(*) from stg_cash_transactions where account_id = 'U9999999'"
    ).iloc[0, 0]
    assert n_detail == len(detail) < parsed["cash_transactions"].num_rows


def test_trades_and_positions_counted_once(built) -> None:
    data_dir, tables = built
    parsed = tables["opensteuerauszug_full_year_2025"]
    executions = [r for r in parsed["trades"].to_pylist() if r["level_of_detail"] == "EXECUTION"]
    stats = query(
        data_dir,
        "select executions, realized_pnl from trade_stats "
        "where account_id = 'U9999999' and symbol = '(all)'",
    ).iloc[0]
    assert stats["executions"] == len(executions)
    realized = sum((r["realized_pnl"] or 0) * r["fx_rate_to_base"] for r in executions)
    assert Decimal(str(stats["realized_pnl"])).quantize(Decimal("0.01")) == realized.quantize(
        Decimal("0.01")
    )
    summary = [r for r in parsed["open_positions"].to_pylist() if r["level_of_detail"] == "SUMMARY"]
    pnl = query(
        data_dir, "select sum(unrealized_pnl) from pnl_by_symbol where account_id = 'U9999999'"
    ).iloc[0, 0]
    expected = sum(r["unrealized_pnl"] * r["fx_rate_to_base"] for r in summary)
    assert float(pnl) == pytest.approx(float(expected), abs=0.01)
    rows = query(
        data_dir, "select count(*) from positions_history where account_id = 'U9999999'"
    ).iloc[0, 0]
    assert rows == len(summary) < parsed["open_positions"].num_rows
