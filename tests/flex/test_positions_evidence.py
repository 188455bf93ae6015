"""No invented positions: positions_daily only on days a statement gives evidence for, and the
``positions_evidence`` check that lists account days with securities in NAV but no positions."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from ibpipeline.assets.checks import days_without_positions, positions_evidence
from ibpipeline.flex.parse import parse_statement
from ibpipeline.flex.positions import reconstruct_daily_positions
from ibpipeline.resources import DataDirResource
from ibpipeline.storage import parquet
from tests.fixture_files import IN_TREE

PORTFOLIO_09 = IN_TREE / "corpus" / "portfolio__testIBFlexStatementFile09.xml"
AAPL = (
    'assetCategory="STK" symbol="AAPL" description="APPLE INC" conid="265598" currency="USD"'
    ' fxRateToBase="1" multiplier="1"'
)


def nav_rows(account: str, stock: dict[str, str]) -> str:
    """EquitySummary rows 2024-03-01 (day before fromDate) .. 2024-03-08, stock value per day."""
    days = ("20240301", "20240304", "20240305", "20240306", "20240307", "20240308")
    return "".join(
        f'<EquitySummaryByReportDateInBase accountId="{account}" currency="USD" reportDate="{d}"'
        f' cash="{10000 - int(stock.get(d, "0"))}" stock="{stock.get(d, "0")}" options="0"'
        f' bonds="0" total="10000" />\n'
        for d in days
    )


def buy(account: str, day: str, qty: str, open_close: str = "O") -> str:
    """An ORDER and its EXECUTION of AAPL at 170, closing at 171."""
    return "".join(
        f'<{tag} accountId="{account}" {AAPL} reportDate="{day}" tradeDate="{day}"'
        f' dateTime="{day};100000" quantity="{qty}" tradePrice="170" closePrice="171"'
        f' proceeds="{-170 * int(qty)}" ibCommission="-1" ibCommissionCurrency="USD"'
        f' buySell="{"BUY" if int(qty) > 0 else "SELL"}" openCloseIndicator="{open_close}"'
        f' levelOfDetail="{level}" transactionID="{"9" + day if tag == "Trade" else ""}" />\n'
        for tag, level in (("Order", "ORDER"), ("Trade", "EXECUTION"))
    )


def statement(account: str, body: str) -> str:
    return (
        f'<FlexStatement accountId="{account}" fromDate="20240304" toDate="20240308" period=""'
        f' whenGenerated="20240309;101010">\n'
        f'<AccountInformation accountId="{account}" currency="USD" />\n{body}</FlexStatement>\n'
    )


def response(*statements: str) -> bytes:
    return (
        f'<FlexQueryResponse queryName="t" type="AF"><FlexStatements count="{len(statements)}">\n'
        f"{''.join(statements)}</FlexStatements></FlexQueryResponse>\n"
    ).encode()


HELD = {"20240306": "1710", "20240307": "1710", "20240308": "1710"}
MINIMAL = response(
    statement(
        "U1234567",
        f"<EquitySummaryInBase>\n{nav_rows('U1234567', HELD)}</EquitySummaryInBase>\n"
        f"<Trades>\n{buy('U1234567', '20240306', '10')}</Trades>\n",
    )
)


def test_statement_without_open_positions_invents_no_positions() -> None:
    """A buy of 10 AAPL and no OpenPositions: no -10 before the buy, and nothing after it
    either (the statement does not say what else was held); the check names the days."""
    parsed = parse_statement(MINIMAL)
    assert parsed["trades"].num_rows == 2
    positions = reconstruct_daily_positions(parsed)
    assert positions.num_rows == 0
    missing = days_without_positions(parsed["nav_daily"].to_pylist(), positions.to_pylist())
    assert missing == [("U1234567", date(2024, 3, d)) for d in (6, 7, 8)]


def test_prior_period_positions_alone_give_no_quantities() -> None:
    """PriorPeriodPosition rows carry no quantity in IBKR's schema: they price days, they cannot
    replace the OpenPositions snapshot."""
    prior = "".join(
        f'<PriorPeriodPosition accountId="U1234567" {AAPL} date="{d}" price="171"'
        ' priorMtmPnl="10" />\n'
        for d in ("20240307", "20240308")
    )
    xml = response(
        statement(
            "U1234567",
            f"<EquitySummaryInBase>\n{nav_rows('U1234567', HELD)}</EquitySummaryInBase>\n"
            f"<Trades>\n{buy('U1234567', '20240306', '10')}</Trades>\n"
            f"<PriorPeriodPositions>\n{prior}</PriorPeriodPositions>\n",
        )
    )
    assert reconstruct_daily_positions(parse_statement(xml)).num_rows == 0


def test_open_positions_snapshot_is_walked_back() -> None:
    """With the snapshot, the same buy gives 10 from its day on and nothing before."""
    snapshot = (
        f'<OpenPosition accountId="U1234567" {AAPL} reportDate="20240308" position="10"'
        ' markPrice="171" positionValue="1710" levelOfDetail="SUMMARY" />\n'
    )
    xml = response(
        statement(
            "U1234567",
            f"<EquitySummaryInBase>\n{nav_rows('U1234567', HELD)}</EquitySummaryInBase>\n"
            f"<OpenPositions>\n{snapshot}</OpenPositions>\n"
            f"<Trades>\n{buy('U1234567', '20240306', '10')}</Trades>\n",
        )
    )
    parsed = parse_statement(xml)
    positions = reconstruct_daily_positions(parsed)
    held = {r["date"]: r["quantity"] for r in positions.to_pylist()}
    assert held == {date(2024, 3, d): 10 for d in (6, 7, 8)}
    assert days_without_positions(parsed["nav_daily"].to_pylist(), positions.to_pylist()) == []


def test_empty_open_positions_of_a_multi_account_query_is_a_flat_snapshot() -> None:
    """One query, one set of sections: when another account of the response has OpenPositions,
    an account without rows there is flat at the end, and its earlier days are walked back."""
    snapshot = (
        f'<OpenPosition accountId="U1111111" {AAPL} reportDate="20240308" position="5"'
        ' markPrice="171" positionValue="855" levelOfDetail="SUMMARY" />\n'
    )
    held = {"20240304": "1710", "20240305": "1710"}
    xml = response(
        statement(
            "U1111111",
            f"<EquitySummaryInBase>\n{nav_rows('U1111111', {})}</EquitySummaryInBase>\n"
            f"<OpenPositions>\n{snapshot}</OpenPositions>\n",
        ),
        statement(
            "U2222222",
            f"<EquitySummaryInBase>\n{nav_rows('U2222222', held)}</EquitySummaryInBase>\n"
            "<OpenPositions>\n</OpenPositions>\n"
            f"<Trades>\n{buy('U2222222', '20240306', '-10', 'C')}</Trades>\n",
        ),
    )
    positions = reconstruct_daily_positions(parse_statement(xml))
    flat = positions.filter(pc.equal(positions["account_id"], "U2222222")).to_pylist()
    assert {r["date"]: r["quantity"] for r in flat} == {date(2024, 3, 4): 10, date(2024, 3, 5): 10}


def test_real_trades_only_statement_has_no_positions() -> None:
    """portfolio09: two trades (one cancelled), no OpenPositions -> no positions."""
    parsed = parse_statement(PORTFOLIO_09.read_bytes())
    assert parsed["trades"].num_rows >= 2
    assert reconstruct_daily_positions(parsed).num_rows == 0


def _write_days(table_name: str, table: pa.Table, root: Path) -> None:
    for day in sorted(set(table["date"].to_pylist())):
        part = table.filter(pc.equal(table["date"], pa.scalar(day, pa.date32())))
        parquet.write_day(table_name, day, part, data_dir=root)


def test_positions_evidence_check_warns_with_the_account_days(tmp_path: Path) -> None:
    parsed = parse_statement(MINIMAL)
    _write_days("nav_daily", parsed["nav_daily"], tmp_path)
    positions = reconstruct_daily_positions(parsed)
    parquet.write_day("positions_daily", date(2024, 3, 8), positions, data_dir=tmp_path)
    result = positions_evidence(
        dg.build_asset_check_context(), data_dir=DataDirResource(path=str(tmp_path))
    )
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["days_without_positions"].value == 3
    assert result.metadata["by_account"].value == {"U1234567": 3}
    listed = result.metadata["first_missing"].value
    assert "U1234567 2024-03-06" in listed and "2024-03-04" not in listed


def test_positions_evidence_check_passes_when_positions_exist(tmp_path: Path) -> None:
    nav = [{"account_id": "U1", "date": date(2024, 3, 4), "stock_base": 5, "bonds_base": 0}]
    pos = [{"account_id": "U1", "date": date(2024, 3, 4)}]
    cash_only = [{"account_id": "U2", "date": date(2024, 3, 4), "stock_base": 0}]
    assert days_without_positions([*nav, *cash_only], pos) == []
    result = positions_evidence(
        dg.build_asset_check_context(), data_dir=DataDirResource(path=str(tmp_path))
    )
    assert result.passed
