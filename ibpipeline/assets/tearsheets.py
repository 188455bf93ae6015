"""``tearsheets``: one PNG per account (and the household ``ALL``) of the marts.

Each sheet plots the growth of 100 at the account's cumulative TWR with its NAV, and the
drawdown below; the title carries TWR, XIRR and the maximum drawdown. Files go to
``<data_dir>/tearsheets/<account>.png`` (replaced atomically) and are embedded in the asset's
Markdown metadata as base64 data URIs. XIRR is money-weighted from ``daily_nav``'s NAV and
external flows (``ibpipeline.finance.returns.xirr``).
"""

import base64
import io
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

import dagster as dg
from matplotlib import dates as mdates
from matplotlib.figure import Figure

from ibpipeline.assets.checks import open_marts
from ibpipeline.assets.marts import DUCKDB_POOL, MARTS_GROUP
from ibpipeline.finance.returns import xirr
from ibpipeline.partitions import daily
from ibpipeline.resources import DataDirResource
from ibpipeline.storage import atomic_write_bytes

TEARSHEET_DIR = "tearsheets"
_SERIES_SQL = """
select n.account_id, n.currency, n.date, n.nav, n.external_flow, r.cumulative_twr, d.drawdown
from daily_nav as n
left join daily_returns as r using (account_id, date)
left join drawdowns as d using (account_id, date)
where n.nav is not null  -- household days without a USD rate for every account
order by n.account_id, n.date
"""


@dataclass
class AccountSeries:
    """One account's daily NAV (base currency; ALL in USD), external flows (+ in, - out),
    cumulative TWR and drawdown (fractions; None before the first return)."""

    account_id: str
    currency: str
    dates: list[date] = field(default_factory=list)
    nav: list[Decimal] = field(default_factory=list)
    flows: list[Decimal] = field(default_factory=list)
    cumulative_twr: list[float | None] = field(default_factory=list)
    drawdown: list[float | None] = field(default_factory=list)

    @property
    def twr(self) -> float | None:
        """Cumulative TWR on the last day with a return."""
        return next((t for t in reversed(self.cumulative_twr) if t is not None), None)

    @property
    def max_drawdown(self) -> float:
        """Deepest drawdown (<= 0)."""
        return min((d for d in self.drawdown if d is not None), default=0.0)


def read_series(con) -> list[AccountSeries]:
    """Every account's series from the marts, ordered by account then date."""
    out: dict[str, AccountSeries] = {}
    for account_id, currency, day, nav, flow, twr, dd in con.execute(_SERIES_SQL).fetchall():
        series = out.setdefault(account_id, AccountSeries(account_id, currency))
        series.dates.append(day)
        series.nav.append(nav)
        series.flows.append(flow)
        series.cumulative_twr.append(twr)
        series.drawdown.append(dd)
    return list(out.values())


def xirr_cashflows(
    dates: list[date], nav: list[Decimal], flows: list[Decimal]
) -> list[tuple[date, Decimal]]:
    """Investor-side dated flows for XIRR: contributions negative, withdrawals and the ending NAV
    positive. The start is the first day's funding when the account is funded that day (the
    marts' convention), else its first NAV; the first day's own flow is inside either.
    Raises ValueError on empty or misaligned input."""
    if not dates or not len(dates) == len(nav) == len(flows):
        raise ValueError("xirr_cashflows needs equally long, non-empty dates, nav and flows")
    start = flows[0] if flows[0] > 0 else nav[0]
    out = [(dates[0], -start)]
    out += [(d, -f) for d, f in zip(dates[1:], flows[1:], strict=True) if f != 0]
    out.append((dates[-1], nav[-1]))
    return out


def money_weighted_return(series: AccountSeries) -> float | None:
    """Annual XIRR of the account, or None when it is undefined (e.g. a single day)."""
    try:
        return xirr(xirr_cashflows(series.dates, series.nav, series.flows))
    except ValueError:
        return None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def render_png(series: AccountSeries, money_weighted: float | None) -> bytes:
    """The tearsheet of one account as PNG bytes (Agg canvas, no pyplot global state)."""
    fig = Figure(figsize=(8, 4.8), dpi=80, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    growth = [100 * (1 + (t or 0.0)) for t in series.cumulative_twr]
    top.plot(series.dates, growth, color="tab:blue", label="growth of 100 (TWR)")
    top.set_ylabel("growth of 100")
    nav_axis = top.twinx()
    nav_axis.plot(series.dates, [float(v) for v in series.nav], color="tab:gray", lw=0.8)
    nav_axis.set_ylabel(f"NAV ({series.currency})")
    top.set_title(
        f"{series.account_id} ({series.currency})  TWR {_pct(series.twr)}  "
        f"XIRR {_pct(money_weighted)}  max DD {_pct(series.max_drawdown)}"
    )
    drawdown = [100 * (d or 0.0) for d in series.drawdown]
    bottom.fill_between(series.dates, drawdown, 0, color="tab:red", alpha=0.4, lw=0)
    bottom.set_ylabel("drawdown %")
    locator = mdates.AutoDateLocator()
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def tearsheet_path(data_dir: Path, account_id: str) -> Path:
    """``<data_dir>/tearsheets/<account_id>.png``."""
    return Path(data_dir) / TEARSHEET_DIR / f"{account_id}.png"


def _section(series: AccountSeries, money_weighted: float | None, path: Path, png: bytes) -> str:
    data_uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return (
        f"### {series.account_id} ({series.currency})\n\n"
        f"{series.dates[0]}..{series.dates[-1]}: TWR {_pct(series.twr)}, "
        f"XIRR {_pct(money_weighted)}, max drawdown {_pct(series.max_drawdown)}  \n"
        f"`{path}`\n\n![{series.account_id}]({data_uri})\n"
    )


@dg.asset(
    deps=["daily_nav", "daily_returns", "drawdowns"],
    # daily + single run like the marts it reads, so a UI backfill of a range stays one run
    # (marts.py); every run renders the whole history whatever its days.
    partitions_def=daily,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name=MARTS_GROUP,
    pool=DUCKDB_POOL,
    kinds={"python", "png"},
    description="Equity curve + drawdown PNG per account and ALL in <data_dir>/tearsheets/.",
)
def tearsheets(
    context: dg.AssetExecutionContext, data_dir: DataDirResource
) -> dg.MaterializeResult:
    """Render and write every account's tearsheet; embed them in the metadata."""
    root = data_dir.root()
    with open_marts(root) as con:
        all_series = read_series(con)
    if not all_series:  # e.g. imported statements without EquitySummary: nothing to draw
        context.log.info("daily_nav has no NAV rows yet: no tearsheet to draw")
        return dg.MaterializeResult(metadata={"accounts": 0})
    sections, metadata = [], {}
    for series in all_series:
        money_weighted = money_weighted_return(series)
        png = render_png(series, money_weighted)
        path = tearsheet_path(root, series.account_id)
        atomic_write_bytes(path, png)
        context.log.info(f"wrote {path} ({len(png)} bytes)")
        sections.append(_section(series, money_weighted, path, png))
        metadata[f"path_{series.account_id}"] = dg.MetadataValue.path(str(path))
        metadata[f"xirr_{series.account_id}"] = money_weighted
        metadata[f"twr_{series.account_id}"] = series.twr
    return dg.MaterializeResult(
        metadata={
            "accounts": [s.account_id for s in all_series],
            "tearsheets": dg.MetadataValue.md("\n".join(sections)),
            **metadata,
        }
    )
