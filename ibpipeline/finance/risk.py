"""Risk statistics on daily return series, matching quantstats 0.0.86 exactly.

Inputs are ``pd.Series`` of periodic returns (fractions) indexed by date; NaN observations are
dropped. Conventions (as in ``quantstats.stats``):

- ``volatility``: sample standard deviation (ddof=1) times ``sqrt(periods)``.
- ``rf`` is an annual rate, de-annualized as ``(1 + rf) ** (1 / periods) - 1`` and subtracted
  from every return before Sharpe and Sortino.
- ``sharpe``: mean(excess) / std(excess, ddof=1) * sqrt(periods).
- ``sortino``: mean(excess) / sqrt(sum(excess[excess < 0] ** 2) / n) * sqrt(periods)
  (downside deviation over ALL n observations); NaN when there is no downside.
- ``cagr``: ``(prod(1 + r)) ** (periods / n) - 1`` (years = observations / periods, not calendar
  time; rf is not subtracted); NaN if wealth ends below zero.
- drawdowns: wealth ``prod(1 + r)`` against its running peak, the peak starting at 1.0 (the
  capital before the first observation), so a loss on day one is a drawdown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class DrawdownPeriod:
    """One underwater episode: ``start`` = first day below the peak, ``trough`` = deepest day,
    ``end`` = last underwater day (or the series' last day), ``recovery`` = first day back at the
    peak (None while still underwater), ``max_drawdown`` <= 0, ``days`` = end - start + 1."""

    start: date
    trough: date
    end: date
    recovery: date | None
    max_drawdown: float
    days: int


@dataclass(frozen=True)
class DayReturn:
    """A single day's return."""

    date: date
    value: float


def _clean(returns: pd.Series) -> pd.Series:
    cleaned = returns.astype(float).replace([np.inf, -np.inf], np.nan).dropna()
    if cleaned.empty:
        raise ValueError("return series has no observations")
    return cleaned


def _excess(returns: pd.Series, rf: float, periods: int) -> pd.Series:
    if rf == 0:
        return returns
    return returns - ((1.0 + rf) ** (1.0 / periods) - 1.0)


def _as_date(value: object) -> date:
    return value.date() if isinstance(value, pd.Timestamp) else value  # type: ignore[return-value]


def volatility(returns: pd.Series, periods: int = 252) -> float:
    """Annualized volatility: std(ddof=1) * sqrt(periods)."""
    return float(_clean(returns).std(ddof=1) * math.sqrt(periods))


def sharpe(returns: pd.Series, rf: float = 0.0, periods: int = 252) -> float:
    """Annualized Sharpe ratio of excess returns (rf annual, de-annualized geometrically)."""
    ex = _excess(_clean(returns), rf, periods)
    return float(ex.mean() / ex.std(ddof=1) * math.sqrt(periods))


def sortino(returns: pd.Series, rf: float = 0.0, periods: int = 252) -> float:
    """Annualized Sortino ratio; downside deviation = sqrt(sum(neg excess^2) / n). NaN if none."""
    ex = _excess(_clean(returns), rf, periods)
    downside = math.sqrt(float((ex[ex < 0] ** 2).sum()) / ex.count())
    if downside == 0:
        return math.nan
    return float(ex.mean() / downside * math.sqrt(periods))


def cagr(returns: pd.Series, periods: int = 252) -> float:
    """Compound annual growth rate with years = n observations / periods."""
    r = _clean(returns)
    wealth = float((r + 1.0).prod())
    if wealth < 0:
        return math.nan
    return wealth ** (periods / r.count()) - 1.0


def drawdown_series(returns: pd.Series) -> pd.Series:
    """Underwater curve: wealth / running peak - 1 (<= 0), the peak starting at 1.0."""
    r = _clean(returns)
    wealth = (r + 1.0).cumprod()
    peak = np.maximum(wealth.cummax(), 1.0)
    dd = wealth / peak - 1.0
    return dd.where(dd != 0, 0.0).rename("drawdown")


def max_drawdown(returns: pd.Series) -> float:
    """Deepest drawdown (<= 0)."""
    return min(float(drawdown_series(returns).min()), 0.0)


def drawdown_periods(returns: pd.Series) -> list[DrawdownPeriod]:
    """Every underwater episode in time order (see ``DrawdownPeriod``)."""
    dd = drawdown_series(returns)
    periods: list[DrawdownPeriod] = []
    start = None
    dates = list(dd.index)
    for i, (d, value) in enumerate(dd.items()):
        if value < 0 and start is None:
            start = i
        underwater_ends = start is not None and (value == 0 or i == len(dd) - 1)
        if underwater_ends:
            last = i - 1 if value == 0 else i
            episode = dd.iloc[start : last + 1]
            periods.append(
                DrawdownPeriod(
                    start=_as_date(dates[start]),
                    trough=_as_date(episode.idxmin()),
                    end=_as_date(dates[last]),
                    recovery=_as_date(d) if value == 0 else None,
                    max_drawdown=float(episode.min()),
                    days=(_as_date(dates[last]) - _as_date(dates[start])).days + 1,
                )
            )
            start = None
    return periods


def worst_drawdown(returns: pd.Series) -> DrawdownPeriod | None:
    """The deepest underwater episode (the earliest on ties), or None if never underwater."""
    periods = drawdown_periods(returns)
    return min(periods, key=lambda p: p.max_drawdown) if periods else None


def best_day(returns: pd.Series) -> DayReturn:
    """Highest single-period return and its (first) date."""
    r = _clean(returns)
    return DayReturn(_as_date(r.idxmax()), float(r.max()))


def worst_day(returns: pd.Series) -> DayReturn:
    """Lowest single-period return and its (first) date."""
    r = _clean(returns)
    return DayReturn(_as_date(r.idxmin()), float(r.min()))
