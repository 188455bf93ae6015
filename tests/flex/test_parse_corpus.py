"""Every real statement of the corpus parses whole: per account, the EXECUTION trades and the
EquitySummaryByReportDateInBase rows of the XML (counted here with lxml, independently of the
parser) are all in ``trades`` and ``nav_daily``. Parametrized over the folders, so a file added
there is tested with no code change."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree

from ibpipeline.flex.parse import parse_statement
from tests.fixture_files import corpus_files, corpus_params

NULLS = ("", "-", "--", "N/A", "MULTI")
FILES = corpus_files()


def rows_by_account(path: Path, tag: str) -> list[tuple[str, etree._Element]]:
    """(account, element) of every ``tag`` element; a missing or ``-`` accountId is the
    enclosing FlexStatement's."""
    out = []
    for stmt in etree.parse(str(path)).getroot().iter("FlexStatement"):
        for el in stmt.iter(tag):
            account = el.get("accountId")
            out.append((stmt.get("accountId") if account in (None, *NULLS) else account, el))
    return out


@pytest.fixture(scope="module", params=corpus_params())
def case(request):
    return request.param, parse_statement(request.param)


def test_the_corpus_is_not_empty():
    assert len(FILES) >= 22  # the in-tree copies alone


def test_every_execution_is_in_trades(case):
    path, parsed = case
    xml = Counter(
        account
        for account, el in rows_by_account(path, "Trade")
        if el.get("levelOfDetail") in (None, "", "EXECUTION")
    )
    trades = parsed["trades"]
    got = Counter(
        a
        for a, lod in zip(
            trades["account_id"].to_pylist(), trades["level_of_detail"].to_pylist(), strict=True
        )
        if lod == "EXECUTION"
    )
    assert got == xml


def test_every_nav_row_is_in_nav_daily_with_its_total(case):
    path, parsed = case
    xml = Counter(
        (account, None if el.get("total") in (None, *NULLS) else Decimal(el.get("total")))
        for account, el in rows_by_account(path, "EquitySummaryByReportDateInBase")
    )
    nav = parsed["nav_daily"]
    got = Counter(zip(nav["account_id"].to_pylist(), nav["total_base"].to_pylist(), strict=True))
    assert got == xml
