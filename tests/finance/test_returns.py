"""ibpipeline.finance.returns: TWR with start-of-day flows, linking, XIRR."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pandas as pd
import pytest

from ibpipeline.finance.returns import chain_link, cumulative_return, daily_twr, xirr


def test_daily_twr_matches_ibkr_change_in_nav_of_pp_file17() -> None:
    # EquitySummaryByReportDateInBase totals of 2023-03-01/02 and ChangeInNAV twr="0.050688891"
    nav = pd.Series(
        [Decimal("7674.265297533"), Decimal("7678.155297533")],
        index=[date(2023, 3, 1), date(2023, 3, 2)],
    )
    r = daily_twr(nav, pd.Series(dtype=float))
    assert list(r.index) == [date(2023, 3, 2)]
    assert r.iloc[0] * 100 == pytest.approx(0.050688891, abs=1e-9)


def test_flows_count_at_the_start_of_the_day() -> None:
    idx = [date(2024, 1, 2), date(2024, 1, 3), date(2024, 1, 4)]
    nav = pd.Series([100.0, 220.0, 198.0], index=idx)
    flows = pd.Series([100.0], index=[idx[1]])  # 100 + 100 deposited, grew 10 %
    r = daily_twr(nav, flows)
    assert r.tolist() == pytest.approx([0.10, -0.10])
    assert chain_link(r) == pytest.approx(1.1 * 0.9 - 1)
    assert cumulative_return(r).tolist() == pytest.approx([0.10, 1.1 * 0.9 - 1])


def test_daily_twr_rejects_bad_input() -> None:
    idx = [date(2024, 1, 3), date(2024, 1, 2)]
    with pytest.raises(ValueError, match="strictly increasing"):
        daily_twr(pd.Series([1.0, 2.0], index=idx), pd.Series(dtype=float))
    ok = [date(2024, 1, 2), date(2024, 1, 3)]
    with pytest.raises(ValueError, match="without NAV"):
        daily_twr(pd.Series([1.0, 2.0], index=ok), pd.Series([5.0], index=[date(2024, 1, 9)]))
    with pytest.raises(ValueError, match="must be > 0"):
        daily_twr(pd.Series([100.0, 0.0], index=ok), pd.Series([-100.0], index=[ok[1]]))


def test_xirr_one_year_and_multi_flow() -> None:
    assert xirr([(date(2023, 1, 1), -1000), (date(2024, 1, 1), 1100)]) == pytest.approx(0.10)
    flows = [
        (date(2024, 1, 1), Decimal(-1000)),
        (date(2024, 7, 1), Decimal(-500)),
        (date(2025, 3, 1), Decimal(1700)),
    ]
    rate = xirr(flows)
    npv = sum(float(a) / (1 + rate) ** ((d - date(2024, 1, 1)).days / 365) for d, a in flows)
    assert abs(npv) < 1e-6


def test_xirr_deep_loss_and_rejects_one_sided_flows() -> None:
    rate = xirr([(date(2023, 1, 1), -1000), (date(2024, 1, 1), 10)])
    assert rate == pytest.approx(-0.99)
    with pytest.raises(ValueError, match="positive and one negative"):
        xirr([(date(2024, 1, 1), -1000), (date(2024, 2, 1), -5)])
