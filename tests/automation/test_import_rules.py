"""The import rules of docs/tolerance.md on small hand-made statements (values read back from the
normalized Parquet and the manifests)."""

from __future__ import annotations

import multiprocessing
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

from ibpipeline.cli import main
from ibpipeline.inbox import import_statement
from ibpipeline.storage import parquet, rawstore


def statement(
    account: str,
    from_date: str,
    to_date: str,
    body: str,
    *,
    count: int = 1,
) -> bytes:
    return (
        f'<FlexQueryResponse queryName="t" type="AF"><FlexStatements count="{count}">'
        f'<FlexStatement accountId="{account}" fromDate="{from_date}" toDate="{to_date}" '
        f'period="" whenGenerated="20250301;120000">{body}</FlexStatement>'
        "</FlexStatements></FlexQueryResponse>"
    ).encode()


def nav(account: str, day: str, total: str) -> str:
    return (
        f'<EquitySummaryByReportDateInBase accountId="{account}" reportDate="{day}" '
        f'currency="USD" cash="{total}" total="{total}"/>'
    )


def equity(*rows: str) -> str:
    return f"<EquitySummaryInBase>{''.join(rows)}</EquitySummaryInBase>"


def trade(account: str, day: str, qty: str = "10") -> str:
    return (
        "<Trades>"
        f'<Trade accountId="{account}" currency="USD" fxRateToBase="1" assetCategory="STK" '
        f'symbol="AAPL" conid="265598" tradeID="1{day}" transactionID="2{day}" '
        f'reportDate="{day}" tradeDate="{day}" dateTime="{day};100000" quantity="{qty}" '
        'tradePrice="100" proceeds="-1000" ibCommission="-1" ibCommissionCurrency="USD" '
        'netCash="-1001" buySell="BUY" levelOfDetail="EXECUTION"/></Trades>'
    )


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def nav_by_day(data_dir: Path) -> dict[tuple[str, date], Decimal]:
    rows = parquet.read_table("nav_daily", data_dir=data_dir).to_pylist()
    return {(r["account_id"], r["date"]): r["total_base"] for r in rows}


def test_rows_of_other_accounts_are_kept_and_never_hide_the_header_account(tmp_path) -> None:
    data = tmp_path / "data"
    good = statement(
        "U1111111",
        "20250303",
        "20250304",
        equity(nav("U1111111", "20250303", "100"), nav("U1111111", "20250304", "101")),
    )
    assert import_statement(data, write(tmp_path, "good.xml", good)).status == "ingested"
    # header U1111111 is valid, every row belongs to other ids (a sub-account, a placeholder)
    odd = statement(
        "U1111111",
        "20250303",
        "20250304",
        trade("U1111111F", "20250303") + equity(nav("XXXXXXXX", "20250304", "7")),
    )
    result = import_statement(data, write(tmp_path, "odd.xml", odd))
    assert result.status == "ingested"
    assert set(result.accounts) >= {"U1111111F", "XXXXXXXX"}
    got = nav_by_day(data)
    assert got[("U1111111", date(2025, 3, 3))] == Decimal("100")
    assert got[("U1111111", date(2025, 3, 4))] == Decimal("101")
    assert got[("XXXXXXXX", date(2025, 3, 4))] == Decimal("7")
    trades = parquet.read_table("trades", data_dir=data).to_pylist()
    assert [r["account_id"] for r in trades] == ["U1111111F"]


def test_a_trades_only_file_never_hides_the_nav_of_its_days(tmp_path) -> None:
    data = tmp_path / "data"
    full = statement("U1111111", "20250303", "20250303", equity(nav("U1111111", "20250303", "100")))
    import_statement(data, write(tmp_path, "full.xml", full))
    only_trades = statement("U1111111", "20250303", "20250303", trade("U1111111", "20250303"))
    import_statement(data, write(tmp_path, "trades.xml", only_trades))
    assert nav_by_day(data) == {("U1111111", date(2025, 3, 3)): Decimal("100")}
    assert len(parquet.read_table("trades", data_dir=data)) == 1


def test_the_day_before_row_fills_a_gap_but_never_overrides_a_statement_of_that_day(
    tmp_path,
) -> None:
    march3 = statement(
        "U1111111", "20250303", "20250303", equity(nav("U1111111", "20250303", "100"))
    )
    # IBKR's opening row of the next statement says 99 for 2025-03-03 (e.g. a later correction
    # of a statement we do not have): it must not replace the statement of that day
    march4 = statement(
        "U1111111",
        "20250304",
        "20250304",
        equity(nav("U1111111", "20250303", "99"), nav("U1111111", "20250304", "101")),
    )
    for order in ((march3, march4), (march4, march3)):
        data = tmp_path / f"data{len(list(tmp_path.iterdir()))}"
        for i, content in enumerate(order):
            import_statement(data, write(tmp_path, f"s{i}.xml", content))
        assert nav_by_day(data) == {
            ("U1111111", date(2025, 3, 3)): Decimal("100"),
            ("U1111111", date(2025, 3, 4)): Decimal("101"),
        }
    alone = tmp_path / "alone"
    result = import_statement(alone, write(tmp_path, "s4.xml", march4))
    assert nav_by_day(alone)[("U1111111", date(2025, 3, 3))] == Decimal("99")
    assert any("outside their statement's period" in w for w in result.warnings)


def test_a_period_of_two_centuries_is_clipped_to_its_rows(tmp_path, capsys) -> None:
    data = tmp_path / "data"
    huge = statement(
        "U1111111",
        "19000101",
        "20991231",
        '<AccountInformation accountId="U1111111" currency="USD"/>'
        + equity(nav("U1111111", "20250303", "100"), nav("U1111111", "20250304", "101")),
    )
    path = write(tmp_path, "huge.xml", huge)
    assert main(["import", "--no-marts", "--data-dir", str(data), str(path)]) == 0
    assert "warning:" in capsys.readouterr().err
    manifests = list((data / "raw/flex/by_date").glob("*.json"))
    assert len(manifests) <= 2
    assert len(list((data / "normalized").rglob("*.parquet"))) <= 2 * 9
    assert nav_by_day(data) == {
        ("U1111111", date(2025, 3, 3)): Decimal("100"),
        ("U1111111", date(2025, 3, 4)): Decimal("101"),
    }


def _write_manifests(data_dir: str, account: str, sha: str, barrier) -> None:
    first = date(2025, 1, 1)
    entry = rawstore.Manifest(
        sha256=sha,
        size=1,
        from_date=first,
        to_date=first + timedelta(days=364),
        accounts=(),
        fetched_at="2025-12-31T00:00:00+00:00",
        source="inbox",
    )
    days = {
        first + timedelta(days=i): rawstore.Manifest.of_rows(entry, {"nav_daily": [account]})
        for i in range(365)
    }
    barrier.wait(60)  # both processes imported and ready: start writing together
    for day, manifest in sorted(days.items()):
        rawstore.write_manifest(Path(data_dir), day, manifest)


def test_concurrent_manifest_writers_lose_nothing(tmp_path) -> None:
    """Two processes write 365 day manifests at once, each for its own account: every day ends
    up with both accounts (a read-modify-write without the lock loses one side on some days)."""
    ctx = multiprocessing.get_context("spawn")
    for trial in range(3):
        data = tmp_path / f"d{trial}"
        barrier = ctx.Barrier(2)
        procs = [
            ctx.Process(target=_write_manifests, args=(str(data), acc, ch * 64, barrier))
            for acc, ch in (("U1111111", "a"), ("U2222222", "b"))
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        for i in range(365):
            day = rawstore.read_manifest(data, date(2025, 1, 1) + timedelta(days=i))
            assert day.accounts == ("U1111111", "U2222222"), day
