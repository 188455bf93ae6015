"""The securities dimension (conid-keyed, type-2 slowly changing) on hand-made rows: a rename that
keeps the conid opens a version, a source that lacks a column opens none, and a conid change is
another instrument."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from .normalized import dbt_build, write_rows

pytestmark = pytest.mark.slow

A = "U1000001"
D1, D2, D3, D4 = date(2025, 3, 3), date(2025, 3, 4), date(2025, 3, 5), date(2025, 3, 6)


def position(day: date, conid: int, symbol: str, isin: str | None) -> dict:
    return {
        "account_id": A, "date": day, "conid": conid, "level_of_detail": "SUMMARY",
        "symbol": symbol, "description": "FACEBOOK INC" if symbol == "FB" else "META PLATFORMS",
        "asset_category": "STK", "currency": "USD", "isin": isin, "quantity": Decimal(10),
        "multiplier": Decimal(1),
    }  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("securities")
    write_rows(d, "account_info", [
        {"account_id": A, "date": x, "base_currency": "USD"} for x in (D1, D2, D3, D4)
    ])  # fmt: skip
    write_rows(d, "securities", [
        {"account_id": A, "date": D1, "conid": 107113386, "symbol": "FB",
         "description": "FACEBOOK INC", "asset_category": "STK", "currency": "USD",
         "isin": "US30303M1027", "figi": "BBG000MM2P62", "listing_exchange": "NASDAQ"},
        {"account_id": A, "date": D3, "conid": 107113386, "symbol": "META",
         "description": "META PLATFORMS", "asset_category": "STK", "currency": "USD",
         "isin": "US30303M1027", "figi": "BBG000MM2P62", "listing_exchange": "NASDAQ"},
    ])  # fmt: skip
    write_rows(d, "positions_daily", [
        position(D1, 107113386, "FB", "US30303M1027"),
        position(D2, 107113386, "FB", None),  # a source without the ISIN: no new version
        position(D3, 107113386, "META", "US30303M1027"),
        position(D4, 107113386, "META", None),
        position(D4, 999, "XYZ", "US0000000999"),
    ])  # fmt: skip
    dbt_build(d, "--select", "+securities_history")
    return d


def test_a_rename_keeping_the_conid_is_a_new_version(built: Path) -> None:
    with duckdb.connect(str(built / "ibpipeline.duckdb"), read_only=True) as con:
        out = con.execute(
            "select version, valid_from, valid_to, is_current, symbol, description, isin, figi,"
            " listing_exchange, last_seen from securities_history where conid = '107113386'"
            " order by version"
        ).fetchall()
    assert out == [
        (1, D1, D2, False, "FB", "FACEBOOK INC", "US30303M1027", "BBG000MM2P62", "NASDAQ", D2),
        (2, D3, None, True, "META", "META PLATFORMS", "US30303M1027", "BBG000MM2P62", "NASDAQ", D4),
    ]


def test_every_conid_has_one_current_version(built: Path) -> None:
    with duckdb.connect(str(built / "ibpipeline.duckdb"), read_only=True) as con:
        out = con.execute(
            "select conid, count(*), count(*) filter (where is_current) from securities_history"
            " group by 1 order by 1"
        ).fetchall()
    assert out == [("107113386", 2, 1), ("999", 1, 1)]
