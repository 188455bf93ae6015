"""Return arithmetic.

Convention (the simulated world's and IBKR's ``ChangeInNAV.twr``): external flows (deposits and
withdrawals) happen at the START of the day, so the daily time-weighted return is

    r_d = nav_d / (nav_{d-1} + flow_d) - 1

and the window's TWR is ``prod(1 + r_d) - 1`` (IBKR prints it times 100 as ``twr``).
Returns are plain fractions (0.01 = 1 %), as floats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import date
from decimal import Decimal

import pandas as pd

_DAYS_PER_YEAR = 365.0


def daily_twr(nav: pd.Series, flows: pd.Series) -> pd.Series:
    """Daily time-weighted returns from end-of-day NAV and external flows (both in one currency).

    ``nav`` is indexed by strictly increasing dates; ``flows`` by date (deposits positive,
    withdrawals negative; missing dates mean no flow; flows on dates absent from ``nav`` are
    rejected). The result is indexed by ``nav.index[1:]``: the first day has no prior NAV.
    Raises ``ValueError`` if the index is not strictly increasing, a flow date has no NAV, or the
    start-of-day capital ``nav_{d-1} + flow_d`` is not positive.
    """
    if not nav.index.is_monotonic_increasing or not nav.index.is_unique:
        raise ValueError("nav index must be strictly increasing dates")
    stray = flows.index.difference(nav.index)
    if len(stray):
        raise ValueError(f"flows on dates without NAV: {list(stray)[:5]}")
    nav_f = nav.astype(float)
    flow_f = flows.astype(float).reindex(nav.index, fill_value=0.0)
    start_capital = nav_f.shift(1) + flow_f
    start_capital = start_capital.iloc[1:]
    bad = start_capital[~(start_capital > 0)]
    if len(bad):
        raise ValueError(f"start-of-day capital nav_prev + flow must be > 0; not on {bad.index[0]}")
    return (nav_f.iloc[1:] / start_capital - 1.0).rename("daily_return")


def chain_link(returns: Iterable[float]) -> float:
    """Geometrically link periodic returns: ``prod(1 + r) - 1``. NaN entries are skipped."""
    total = 1.0
    for r in returns:
        if not math.isnan(r):
            total *= 1.0 + r
    return total - 1.0


def cumulative_return(returns: pd.Series) -> pd.Series:
    """Running linked return after each period (NaN periods count as flat)."""
    return (returns.astype(float).fillna(0.0) + 1.0).cumprod() - 1.0


def _npv(rate: float, flows: Sequence[tuple[float, float]]) -> float:
    return sum(amount / (1.0 + rate) ** t for t, amount in flows)


def _dnpv(rate: float, flows: Sequence[tuple[float, float]]) -> float:
    return sum(-t * amount / (1.0 + rate) ** (t + 1.0) for t, amount in flows)


def xirr(
    cashflows: Sequence[tuple[date, Decimal | float]], tol: float = 1e-10, max_iter: int = 100
) -> float:
    """Money-weighted annual return (XIRR, actual/365) of dated cash flows.

    Amounts are from the investor's side: contributions negative, withdrawals positive, and the
    terminal value (ending NAV) as a final positive flow. Solves ``sum(a_i / (1+r)^(t_i/365)) = 0``
    with Newton's method, falling back to bisection on (-1, 1e6). Raises ``ValueError`` without
    at least one positive and one negative flow, or if no root is bracketed.
    """
    if not cashflows:
        raise ValueError("xirr needs cash flows")
    d0 = min(d for d, _ in cashflows)
    flows = [((d - d0).days / _DAYS_PER_YEAR, float(a)) for d, a in cashflows]
    if not (any(a > 0 for _, a in flows) and any(a < 0 for _, a in flows)):
        raise ValueError("xirr needs at least one positive and one negative cash flow")
    rate = 0.1
    for _ in range(max_iter):
        value, slope = _npv(rate, flows), _dnpv(rate, flows)
        if slope == 0 or not math.isfinite(value):
            break
        step = value / slope
        nxt = rate - step
        if nxt <= -1.0 or not math.isfinite(nxt):
            break
        if abs(step) < tol:
            return nxt
        rate = nxt
    return _bisect(flows, tol)


def _bisect(flows: Sequence[tuple[float, float]], tol: float) -> float:
    lo, hi = -1.0 + 1e-9, 1e6
    f_lo, f_hi = _npv(lo, flows), _npv(hi, flows)
    if f_lo * f_hi > 0:
        raise ValueError("xirr: no rate in (-100%, 1e8%) sets the NPV to zero")
    for _ in range(500):
        mid = (lo + hi) / 2.0
        f_mid = _npv(mid, flows)
        if f_mid == 0 or (hi - lo) / 2.0 < tol:
            return mid
        if f_lo * f_mid < 0:
            hi = mid
        else:
            lo, f_lo = mid, f_mid
    return (lo + hi) / 2.0
