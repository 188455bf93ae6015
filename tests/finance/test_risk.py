"""ibpipeline.finance.risk against quantstats 0.0.86 on the same series (to 1e-9)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import quantstats as qs

from ibpipeline.finance import risk


def _series(seed: int, n: int = 400, first: float | None = None) -> pd.Series:
    rng = np.random.default_rng(seed)
    values = rng.normal(0.0005, 0.012, n)
    if first is not None:
        values[0] = first
    return pd.Series(values, index=pd.bdate_range("2023-01-02", periods=n))


SERIES = [_series(1), _series(2, first=-0.03), _series(3, n=30)]


@pytest.mark.parametrize("returns", SERIES)
@pytest.mark.parametrize("rf", [0.0, 0.04])
def test_ratios_match_quantstats(returns: pd.Series, rf: float) -> None:
    assert risk.sharpe(returns, rf=rf) == pytest.approx(qs.stats.sharpe(returns, rf=rf), abs=1e-9)
    assert risk.sortino(returns, rf=rf) == pytest.approx(qs.stats.sortino(returns, rf=rf), abs=1e-9)
    assert risk.volatility(returns) == pytest.approx(qs.stats.volatility(returns), abs=1e-9)
    assert risk.cagr(returns) == pytest.approx(qs.stats.cagr(returns), abs=1e-9)


@pytest.mark.parametrize("returns", SERIES)
def test_drawdowns_match_quantstats(returns: pd.Series) -> None:
    assert risk.max_drawdown(returns) == pytest.approx(qs.stats.max_drawdown(returns), abs=1e-12)
    expected = qs.stats.to_drawdown_series(returns)
    pd.testing.assert_series_equal(
        risk.drawdown_series(returns), expected, check_names=False, check_freq=False, atol=1e-12
    )
    assert risk.best_day(returns).value == qs.stats.best(returns)
    assert risk.worst_day(returns).value == qs.stats.worst(returns)


def test_drawdown_periods_match_quantstats_details() -> None:
    returns = SERIES[0]
    details = qs.stats.drawdown_details(qs.stats.to_drawdown_series(returns))
    periods = risk.drawdown_periods(returns)
    assert len(periods) == len(details)
    for p, (_, row) in zip(periods, details.iterrows(), strict=True):
        assert (str(p.start), str(p.trough), str(p.end)) == (
            row["start"],
            row["valley"],
            row["end"],
        )
        assert p.days == row["days"]
        assert p.max_drawdown * 100 == pytest.approx(row["max drawdown"], abs=1e-9)
    worst = risk.worst_drawdown(returns)
    assert worst is not None and worst.max_drawdown == pytest.approx(risk.max_drawdown(returns))


def test_drawdown_period_dates_on_a_hand_made_path() -> None:
    idx = pd.bdate_range("2024-01-01", periods=6)
    returns = pd.Series([0.10, -0.10, -0.10, 0.30, -0.05, 0.01], index=idx)
    first, second = risk.drawdown_periods(returns)
    assert (first.start, first.trough, first.end) == (idx[1].date(), idx[2].date(), idx[2].date())
    assert first.recovery == idx[3].date()  # 1.1 * 0.9 * 0.9 * 1.3 = 1.1583 > 1.1
    assert first.max_drawdown == pytest.approx(0.81 - 1)
    assert second.recovery is None and second.end == idx[5].date()


def test_sortino_without_downside_is_nan_and_empty_input_raises() -> None:
    up = pd.Series([0.01, 0.02], index=pd.bdate_range("2024-01-01", periods=2))
    assert math.isnan(risk.sortino(up))
    with pytest.raises(ValueError, match="no observations"):
        risk.sharpe(pd.Series([np.nan], index=pd.bdate_range("2024-01-01", periods=1)))
