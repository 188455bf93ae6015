"""Every real Flex statement imports whole, loses no row and reaches the marts.

Parametrized over the corpus folders (``tests/fixture_files.corpus_files``: the in-tree copies and,
when ``../shared`` exists, the GPL/AGPL files there), so a file added to a folder is tested with no
code change. Expected values are read from the XML here with lxml, independently of the parser:
EXECUTION trades per account, every EquitySummaryByReportDateInBase row with its total, DETAIL cash
transactions summed per account and currency, SUMMARY open positions per account and day.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from lxml import etree

from ibpipeline.cli import main
from ibpipeline.storage import parquet
from tests.fixture_files import (
    SHARED,
    SHARED_ONLY,
    corpus_files,
    corpus_params,
    shared_only_corpus_names,
)
from tests.marts.normalized import dbt_build

FILES = corpus_files()
PARAMS = corpus_params(lambda p: p.name.removesuffix(".xml"))
NULLS = {"", "-", "--", "N/A"}


def test_the_corpus_is_complete_here_or_skipped_with_a_reason() -> None:
    """The in-tree copies are always tested; the shared-only files too when ../shared exists,
    else each is a skip naming its licence."""
    names = {p.name for p in FILES}
    assert len([n for n in names if (Path("tests/fixtures/flex/corpus") / n).exists()]) >= 18
    missing = [n for n in shared_only_corpus_names() if n not in names]
    assert not missing
    if SHARED.is_dir():  # SHARED_ONLY lists exactly the files a clone lacks
        assert sorted(SHARED_ONLY) == shared_only_corpus_names()
    params = {p.id: p for p in PARAMS}
    assert len(params) == len(names | set(SHARED_ONLY))
    for name, licence in SHARED_ONLY.items():
        marks = params[name.removesuffix(".xml")].marks
        assert bool(marks) != (name in names)
        assert all(m.name == "skip" and licence in m.kwargs["reason"] for m in marks)


def _date(text: str) -> date:
    """yyyyMMdd or yyyy-MM-dd (the forms the corpus uses), date part of a date-time."""
    text = text.split(";")[0].split(",")[0].split(" ")[0]
    return date.fromisoformat(text if "-" in text else f"{text[:4]}-{text[4:6]}-{text[6:8]}")


class Expected:
    """What the XML says, read element by element."""

    def __init__(self, path: Path) -> None:
        self.executions: Counter[str] = Counter()
        self.nav: dict[tuple[str, date], Decimal] = {}
        self.cash: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        self.positions: dict[tuple[str, date], Decimal] = defaultdict(Decimal)
        self.accounts: set[str] = set()
        root = etree.parse(str(path)).getroot()
        for statement in root.iter("FlexStatement"):
            header = statement.get("accountId")
            self.accounts.add(header)

            def account(el, header=header):
                value = el.get("accountId")
                return header if value in (None, *NULLS) else value

            for el in statement.iter("Trade"):
                if el.get("levelOfDetail", "EXECUTION") in ("EXECUTION", ""):
                    self.executions[account(el)] += 1
            for el in statement.iter("EquitySummaryByReportDateInBase"):
                self.nav[(account(el), _date(el.get("reportDate")))] = Decimal(el.get("total"))
            for el in statement.iter("CashTransaction"):
                if el.get("levelOfDetail", "DETAIL") in ("DETAIL", ""):
                    key = (account(el), el.get("currency"))
                    self.cash[key] += Decimal(el.get("amount"))
            for el in statement.iter("OpenPosition"):
                if el.get("levelOfDetail", "SUMMARY") in ("SUMMARY", ""):
                    key = (account(el), _date(el.get("reportDate") or statement.get("toDate")))
                    self.positions[key] += Decimal(el.get("position"))


@pytest.fixture(scope="module", params=PARAMS)
def imported(request, tmp_path_factory) -> tuple[Path, Path, Expected]:
    """The file imported with ``ibpipeline import --no-marts`` into its own data folder."""
    path: Path = request.param
    data_dir = tmp_path_factory.mktemp(path.stem[:40])
    assert main(["import", "--no-marts", "--data-dir", str(data_dir), str(path)]) == 0
    return path, data_dir, Expected(path)


def _rows(data_dir: Path, name: str) -> list[dict]:
    """Every stored row of a normalized table (none when it has no file)."""
    return parquet.read_table(name, data_dir=data_dir).to_pylist()


def test_every_execution_is_stored_under_its_account(imported) -> None:
    _, data_dir, expected = imported
    trades = _rows(data_dir, "trades")
    got = Counter(r["account_id"] for r in trades if r["level_of_detail"] == "EXECUTION")
    assert got == expected.executions


def test_every_equity_summary_row_is_in_nav_daily_with_its_total(imported) -> None:
    _, data_dir, expected = imported
    nav = _rows(data_dir, "nav_daily")
    got = {(r["account_id"], r["date"]): r["total_base"] for r in nav}
    assert got == expected.nav


def test_detail_cash_transactions_sum_as_in_the_xml(imported) -> None:
    _, data_dir, expected = imported
    rows = _rows(data_dir, "cash_transactions")
    got: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for r in rows:
        if r["level_of_detail"] == "DETAIL":
            got[(r["account_id"], r["currency"])] += r["amount"]
    assert dict(got) == dict(expected.cash)


def test_open_positions_sum_as_in_the_xml(imported) -> None:
    _, data_dir, expected = imported
    rows = _rows(data_dir, "positions_daily")
    got: dict[tuple[str, date], Decimal] = defaultdict(Decimal)
    for r in rows:
        if (r["account_id"], r["date"]) in expected.positions and r["level_of_detail"] == "SUMMARY":
            got[(r["account_id"], r["date"])] += r["quantity"]
    assert dict(got) == dict(expected.positions)


def test_reimport_changes_nothing(imported) -> None:
    path, data_dir, _ = imported
    before = {p: p.read_bytes() for p in (data_dir / "normalized").rglob("*.parquet")}
    assert main(["import", "--no-marts", "--data-dir", str(data_dir), str(path)]) == 0
    assert {p: p.read_bytes() for p in (data_dir / "normalized").rglob("*.parquet")} == before


@pytest.fixture(scope="module")
def all_in_one(tmp_path_factory) -> Path:
    """Every corpus file imported into one data folder, then one dbt build (marts + tests)."""
    data_dir = tmp_path_factory.mktemp("corpus_all")
    args = ["import", "--no-marts", "--data-dir", str(data_dir), *map(str, FILES)]
    assert main(args) == 0
    dbt_build(data_dir)
    return data_dir


@pytest.mark.slow
def test_the_marts_build_over_the_whole_corpus_with_every_nav_account(all_in_one) -> None:
    nav_accounts = {r["account_id"] for r in _rows(all_in_one, "nav_daily")}
    assert nav_accounts, "the corpus has EquitySummary rows (pp_file17)"
    with duckdb.connect(str(all_in_one / "ibpipeline.duckdb"), read_only=True) as con:
        daily = {r[0] for r in con.sql("select distinct account_id from daily_nav").fetchall()}
        summary = {
            r[0] for r in con.sql("select distinct account_id from performance_summary").fetchall()
        }
    assert nav_accounts <= daily
    assert nav_accounts <= summary


@pytest.mark.slow
def test_cumulative_twr_of_imported_statements_equals_ibkr_change_in_nav_twr(all_in_one) -> None:
    """IBKR's own ChangeInNAV ``twr`` (percent over fromDate..toDate) of every corpus statement
    that has one: the marts' chain-linked daily returns over the same days agree within 1 bp
    (the first day's return needs the opening NAV row of the day before fromDate)."""
    checked = 0
    with duckdb.connect(str(all_in_one / "ibpipeline.duckdb"), read_only=True) as con:
        for path in FILES:
            for el in etree.parse(str(path)).getroot().iter("ChangeInNAV"):
                if not el.get("twr"):
                    continue
                first, last = _date(el.get("fromDate")), _date(el.get("toDate"))
                twr, n = con.execute(
                    "select product(1 + daily_return) - 1, count(daily_return) from daily_returns "
                    "where account_id = ? and date between ? and ?",
                    [el.get("accountId"), first, last],
                ).fetchone()
                assert n >= 1, f"{path.name}: no daily return in {first}..{last}"
                assert twr * 100 == pytest.approx(float(el.get("twr")), abs=0.01), path.name
                checked += 1
    assert checked >= 1  # pp_file17: IBKR says 0.050688891 %


@pytest.mark.slow
def test_no_error_check_fails_after_importing_pp_file17(tmp_path, monkeypatch, capsys) -> None:
    """``ibpipeline import`` of pp_file17 with its marts run (every asset check of the marts
    and dbt tests): no ERROR check fails. Its EquitySummary row of 2023-03-01 (IBKR's opening NAV,
    the day before fromDate) holds stock but the statement has no positions for that day:
    ``nav_reconciles`` skips and counts it instead of reporting a 7594.63 break."""
    import dagster as dg

    from ibpipeline import settings
    from tests.fixture_files import PUBLIC_FLEX_DIR

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    monkeypatch.setenv(settings.DATA_DIR_ENV, str(tmp_path / "elsewhere"))
    data_dir = tmp_path / "data"
    path = PUBLIC_FLEX_DIR / "pp_file17_one_day_many_sections.xml"
    assert main(["import", "--data-dir", str(data_dir), str(path)]) == 0
    run_id = capsys.readouterr().out.split(" in run ")[-1].strip()
    with dg.DagsterInstance.get() as instance:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
        evaluations = [
            e.dagster_event.event_specific_data
            for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        ]
    by_name = {e.check_name: e for e in evaluations}
    assert "nav_reconciles" in by_name and len(evaluations) > 10
    errors = [
        e.check_name
        for e in evaluations
        if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
    ]
    assert errors == []
    reconciled = by_name["nav_reconciles"]
    assert reconciled.passed
    assert reconciled.metadata["account_days"].value == 2
    assert reconciled.metadata["skipped_without_position_evidence"].value == 1
    assert reconciled.metadata["first_skipped"].value == "- U1111111 2023-03-01"
    assert reconciled.metadata["breaks"].value == 0


INCOME_TYPES = ("Dividends", "Payment In Lieu", "Withholding", "871(m) Withholding")


@pytest.mark.slow
def test_income_mart_equals_ibkrs_dividend_and_withholding_rows(all_in_one) -> None:
    """Per account, dividends + payment in lieu + withholding (matched or not) in ``income`` equal
    the sum of IBKR's own DETAIL cash rows of those types at their fxRateToBase (the rows stored
    from the XML, which ``test_detail_cash_transactions_sum_as_in_the_xml`` ties to the files)."""
    expected: dict[str, Decimal] = defaultdict(Decimal)
    for r in _rows(all_in_one, "cash_transactions"):
        if (r["level_of_detail"] or "DETAIL") != "DETAIL" or not (r["type"] or "").startswith(
            INCOME_TYPES
        ):
            continue
        if r["amount"] is not None and r["fx_rate_to_base"] is not None:
            expected[r["account_id"]] += r["amount"] * r["fx_rate_to_base"]
    assert len(expected) >= 5, "the corpus has dividends in several accounts"
    with duckdb.connect(str(all_in_one / "ibpipeline.duckdb"), read_only=True) as con:
        got = dict(
            con.sql(
                "select account_id, sum(dividends + payment_in_lieu + withholding_tax "
                "+ withholding_unmatched) from income where account_id <> 'ALL' group by 1"
            ).fetchall()
        )
    for account, amount in expected.items():
        assert got.get(account) == pytest.approx(amount, abs=Decimal("1e-8")), account


@pytest.mark.slow
def test_realized_pnl_mart_equals_ibkrs_fifo_pnl_of_the_executions(all_in_one) -> None:
    """Per account and year, ``realized_pnl`` (closed lots where the query has them, else the
    executions) equals the sum of IBKR's fifoPnlRealized of the executions at their fxRateToBase:
    accounts whose Flex query has neither FIFO summaries nor closed lots get their realized P&L."""
    expected: dict[tuple[str, int], Decimal] = defaultdict(Decimal)
    for r in _rows(all_in_one, "trades"):
        if r["level_of_detail"] != "EXECUTION" or not r["realized_pnl"]:
            continue
        year = (r["trade_date"] or r["date"]).year
        expected[(r["account_id"], year)] += r["realized_pnl"] * r["fx_rate_to_base"]
    with duckdb.connect(str(all_in_one / "ibpipeline.duckdb"), read_only=True) as con:
        got = {
            (a, y): (total, sources)
            for a, y, total, sources in con.sql(
                "select account_id, year, sum(realized_total), list(distinct source) "
                "from realized_pnl where account_id <> 'ALL' group by 1, 2"
            ).fetchall()
        }
        fifo_accounts = {
            r[0] for r in con.sql("select distinct account_id from stg_fifo_performance").fetchall()
        }
    checked = 0
    for (account, year), amount in expected.items():
        if account in fifo_accounts:
            continue  # IBKR's FIFO summary wins there (it also counts corporate-action P&L)
        total, sources = got[(account, year)]
        assert total == pytest.approx(amount, abs=Decimal("1e-8")), (account, year, sources)
        checked += 1
    # the in-tree (MIT/Apache/EPL) files alone hold 2 such account years; with ../shared's GPL
    # files also U7654321, U9999999, U99999902 (executions) and U12345678 (closed lots)
    assert checked >= (4 if SHARED.is_dir() else 2)
