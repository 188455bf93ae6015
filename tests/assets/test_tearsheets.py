"""Tearsheets are drawn only when their data changed, in a process pool when there are many."""

from datetime import date, timedelta
from decimal import Decimal

from ibpipeline.reports.tearsheets import (
    AccountSeries,
    draw_changed,
    read_digests,
    tearsheet_path,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def series(account_id: str, days: int, drift: float) -> AccountSeries:
    out = AccountSeries(account_id, "USD")
    for i in range(days):
        out.dates.append(date(2024, 1, 1) + timedelta(days=i))
        out.nav.append(Decimal(100_000 + 10 * i))
        out.flows.append(Decimal(100_000) if i == 0 else Decimal(0))
        out.cumulative_twr.append(None if i == 0 else drift * i)
        out.drawdown.append(None if i == 0 else -drift)
    return out


def test_only_changed_sheets_are_drawn_again(tmp_path):
    accounts = [series(f"U{i:07d}", 30, 0.001 * (i + 1)) for i in range(9)]  # 9: the pool draws
    weighted = {s.account_id: 0.05 for s in accounts}
    pngs, drawn = draw_changed(tmp_path, accounts, weighted)
    assert sorted(drawn) == sorted(s.account_id for s in accounts)
    for s in accounts:
        on_disk = tearsheet_path(tmp_path, s.account_id).read_bytes()
        assert on_disk.startswith(PNG_MAGIC) and pngs[s.account_id] == on_disk
    assert set(read_digests(tmp_path)) == set(weighted)

    # nothing changed: nothing drawn, same bytes handed back
    again, drawn = draw_changed(tmp_path, accounts, weighted)
    assert drawn == [] and again == pngs

    # one account gains a day, another's sheet was deleted: exactly those two are drawn
    accounts[3] = series(accounts[3].account_id, 31, 0.004)
    tearsheet_path(tmp_path, accounts[5].account_id).unlink()
    third, drawn = draw_changed(tmp_path, accounts, weighted)
    assert sorted(drawn) == sorted([accounts[3].account_id, accounts[5].account_id])
    assert third[accounts[3].account_id] != pngs[accounts[3].account_id]
    assert third[accounts[0].account_id] == pngs[accounts[0].account_id]

    # a changed XIRR (title) also redraws
    _, drawn = draw_changed(tmp_path, accounts, {**weighted, accounts[0].account_id: 0.07})
    assert drawn == [accounts[0].account_id]
