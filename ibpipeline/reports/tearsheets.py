"""Tearsheets: one PNG per account (and the household ``ALL``) of the marts (plain functions;
``ibpipeline.assets.tearsheets`` wires them into Dagster).

Each sheet plots the growth of 100 at the account's cumulative TWR with its NAV, and the
drawdown below; the title carries TWR, XIRR and the maximum drawdown. Files go to
``<data_dir>/tearsheets/<account>.png`` (replaced atomically). XIRR is money-weighted from
``daily_nav``'s NAV and external flows (``ibpipeline.finance.returns.xirr``).

Only sheets whose data changed are drawn again: each account's series has a digest, kept in
``<data_dir>/tearsheets/digests.json``, and an account whose digest and PNG are unchanged is
skipped. Many sheets are drawn by this process and a process pool (one process per further core)
together, and written by a thread while the drawing goes on (``render_many``).
"""

import base64
import hashlib
import io
import json
import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

import numpy as np
from matplotlib import dates as mdates
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ibpipeline.storage import atomic_write_bytes

TEARSHEET_DIR = "tearsheets"
DIGEST_FILE = "digests.json"
RENDER_VERSION = "2"
"""Part of every digest: bump it when the drawing changes, so every sheet is drawn again."""
MEMO_SIZE = 1024
"""Date ranges (tick sets) a sheet's date locator (formatter) remembers before starting over."""
POOL_MIN_SHEETS = 8
"""Below this many sheets to draw, drawing in this process beats starting a pool."""
CHUNK_SHEETS = 4
"""Sheets per task of the pool: small enough for this process and the pool to share the work
evenly, large enough that a task's pickling and round trip are a few per cent of it."""
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
    from ibpipeline.finance.returns import xirr  # pandas: not needed by the drawing processes

    try:
        return xirr(xirr_cashflows(series.dates, series.nav, series.flows))
    except ValueError:
        return None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def series_digest(series: AccountSeries, money_weighted: float | None) -> str:
    """sha256 of everything a sheet shows (and the drawing's version)."""
    digest = hashlib.sha256(f"{RENDER_VERSION}|{series.account_id}|{series.currency}".encode())
    for row in zip(
        series.dates, series.nav, series.flows, series.cumulative_twr, series.drawdown, strict=True
    ):
        digest.update(repr(row).encode())
    digest.update(repr(money_weighted).encode())
    return digest.hexdigest()


class _DateLocator(mdates.AutoDateLocator):
    """``AutoDateLocator`` remembering the ticks of each view interval: the shared x axis asks
    for them six times a sheet, and most sheets span the same days."""

    def __init__(self) -> None:
        super().__init__()
        self._memo: dict[tuple[float, float], tuple[np.ndarray, int]] = {}

    def __call__(self) -> np.ndarray:
        vmin, vmax = self.axis.get_view_interval()
        key = (float(vmin), float(vmax))
        if (hit := self._memo.get(key)) is None:
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            hit = self._memo[key] = (np.array(super().__call__()), self._freq)
        ticks, self._freq = hit
        return ticks.copy()


class _DateFormatter(mdates.ConciseDateFormatter):
    """``ConciseDateFormatter`` remembering the labels (and offset) of each set of ticks."""

    def __init__(self, locator: mdates.DateLocator) -> None:
        super().__init__(locator)
        self._memo: dict[tuple[float, ...], tuple[list[str], str]] = {}

    def format_ticks(self, values: Sequence[float]) -> list[str]:
        key = tuple(float(v) for v in values)
        if (hit := self._memo.get(key)) is None:
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            hit = self._memo[key] = (super().format_ticks(values), self._offset_string)
        labels, self._offset_string = hit
        return list(labels)


class _Sheet:
    """A tearsheet figure drawn again for each account: creating the figure, its three axes and
    their ticks is a third of a sheet's time, so each process keeps one (``render_png``). Its own
    Agg canvas keeps one renderer, so text sizes measured for one sheet serve the next (savefig on
    a canvas-less figure makes a new canvas and renderer each time), and the date ticks of a
    range are located and formatted once."""

    def __init__(self) -> None:
        fig = self.fig = Figure(figsize=(8, 4.8), dpi=80)
        FigureCanvasAgg(fig)
        fig.subplots_adjust(left=0.1, right=0.88, top=0.92, bottom=0.08, hspace=0.08)
        self.top, self.bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
        (self.growth,) = self.top.plot([], [], color="tab:blue", label="growth of 100 (TWR)")
        self.top.set_ylabel("growth of 100")
        self.nav_axis = self.top.twinx()
        (self.nav,) = self.nav_axis.plot([], [], color="tab:gray", lw=0.8)
        self.bottom.set_ylabel("drawdown %")
        locator = _DateLocator()
        self.bottom.xaxis.set_major_locator(locator)
        self.bottom.xaxis.set_major_formatter(_DateFormatter(locator))
        self.drawdown = None

    def png(self, series: AccountSeries, money_weighted: float | None) -> bytes:
        days = mdates.date2num(series.dates)
        self.growth.set_data(days, [100 * (1 + (t or 0.0)) for t in series.cumulative_twr])
        self.nav.set_data(days, [float(v) for v in series.nav])
        self.nav_axis.set_ylabel(f"NAV ({series.currency})")
        self.top.set_title(
            f"{series.account_id} ({series.currency})  TWR {_pct(series.twr)}  "
            f"XIRR {_pct(money_weighted)}  max DD {_pct(series.max_drawdown)}",
            y=1.0,  # a fixed position: the automatic one measures every axis (30 % of a sheet)
        )
        if self.drawdown is not None:
            self.drawdown.remove()
        drawdown = [100 * (d or 0.0) for d in series.drawdown]
        self.drawdown = self.bottom.fill_between(
            days, drawdown, 0, color="tab:red", alpha=0.4, lw=0
        )
        for axes in (self.top, self.nav_axis, self.bottom):
            axes.relim()
            axes.autoscale_view()
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", pil_kwargs={"compress_level": 1})
        return buf.getvalue()


_sheets = threading.local()


def render_png(series: AccountSeries, money_weighted: float | None) -> bytes:
    """The tearsheet of one account as PNG bytes (Agg canvas, no pyplot global state).

    Fixed margins and title position instead of a layout engine, fast PNG compression, and one
    figure per thread drawn again for each account (the same bytes as a new figure's:
    tests/assets/test_tearsheets.py): about a fifth of the first version's time."""
    sheet = getattr(_sheets, "sheet", None)
    if sheet is None:
        sheet = _sheets.sheet = _Sheet()
    return sheet.png(series, money_weighted)


def _start_worker() -> None:
    """Pool initializer: the figure is built while this process waits for its first task."""
    _sheets.sheet = _Sheet()


def _render_chunk(jobs: list[tuple[AccountSeries, float | None]]) -> list[bytes]:
    return [render_png(*job) for job in jobs]


def render_many(
    jobs: list[tuple[AccountSeries, float | None]],
    on_png: Callable[[int, bytes], object] | None = None,
) -> list[bytes]:
    """``render_png`` of every job; ``on_png(index, png)`` is called as each one is done (from
    this thread or the pool's result thread).

    Many jobs on several cores: a spawned pool of ``cores - 1`` processes takes chunks from the
    front while this process (matplotlib already imported) draws chunks from the back, taking each
    one the pool has not started, so the pool's start-up (a fresh interpreter importing
    matplotlib) overlaps drawing instead of delaying it. Never a pool in a daemonic process (a
    step on a Celery prefork worker, ``IBPIPELINE_EXECUTOR=celery``): multiprocessing refuses it
    children, so the sheets are drawn here one after the other."""
    results: list[bytes | None] = [None] * len(jobs)

    def done(index: int, png: bytes) -> None:
        results[index] = png
        if on_png is not None:
            on_png(index, png)

    cores = os.cpu_count() or 1
    if cores < 2 or len(jobs) < POOL_MIN_SHEETS or multiprocessing.current_process().daemon:
        for i, job in enumerate(jobs):
            done(i, render_png(*job))
        return results  # type: ignore[return-value]
    starts = range(0, len(jobs), CHUNK_SHEETS)
    # spawn: the caller may be a multi-threaded Dagster process, where fork is unsafe
    pool = ProcessPoolExecutor(
        max_workers=min(cores - 1, len(starts)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
    )
    try:
        futures = [pool.submit(_render_chunk, jobs[s : s + CHUNK_SHEETS]) for s in starts]
        handled = [
            _on_chunk(future, start, done) for start, future in zip(starts, futures, strict=True)
        ]
        for start, future in zip(reversed(starts), reversed(futures), strict=True):
            if future.cancel():  # not started by the pool: this process draws it
                for i, job in enumerate(jobs[start : start + CHUNK_SHEETS], start):
                    done(i, render_png(*job))
        for future, chunk_handled in zip(futures, handled, strict=True):
            if not future.cancelled():
                future.result()  # raises a worker's error
                chunk_handled.wait()  # its callback has handed every PNG to done()
    finally:
        # every chunk is done or cancelled: no need to wait for the idle processes to exit
        pool.shutdown(wait=False, cancel_futures=True)
    return results  # type: ignore[return-value]


def _on_chunk(future: Future, start: int, done: Callable[[int, bytes], None]) -> threading.Event:
    """Hand the PNGs of a pool's chunk (its first job: ``start``) to ``done`` as soon as it is
    drawn (in the pool's result thread); the event is set when that is over."""
    handled = threading.Event()

    def callback(future: Future) -> None:
        try:
            if not future.cancelled() and future.exception() is None:
                for i, png in enumerate(future.result(), start):
                    done(i, png)
        finally:
            handled.set()

    future.add_done_callback(callback)
    return handled


def read_digests(data_dir: Path) -> dict[str, str]:
    """``{account: digest}`` of the sheets on disk (empty when unknown or unreadable)."""
    try:
        return json.loads((Path(data_dir) / TEARSHEET_DIR / DIGEST_FILE).read_text())
    except (OSError, ValueError):
        return {}


def draw_changed(
    data_dir: Path, all_series: list[AccountSeries], weighted: dict[str, float | None]
) -> tuple[dict[str, bytes], list[str]]:
    """Write the PNG of every account whose data changed since its sheet was drawn (``weighted``:
    each account's XIRR); return ``({account: png bytes} of every account, [accounts drawn])``."""
    digests = read_digests(data_dir)
    wanted = {s.account_id: series_digest(s, weighted[s.account_id]) for s in all_series}
    pngs: dict[str, bytes] = {}
    stale: list[AccountSeries] = []
    for series in all_series:
        path = tearsheet_path(data_dir, series.account_id)
        if digests.get(series.account_id) == wanted[series.account_id] and path.is_file():
            pngs[series.account_id] = path.read_bytes()
        else:
            stale.append(series)
    # a thread writes (and fsyncs) each sheet as soon as it is drawn, while the drawing goes on
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tearsheet-writer") as writer:
        writes: list[Future] = []

        def write(index: int, png: bytes) -> None:
            path = tearsheet_path(data_dir, stale[index].account_id)
            writes.append(writer.submit(atomic_write_bytes, path, png))

        drawn = render_many([(s, weighted[s.account_id]) for s in stale], on_png=write)
        for future in writes:
            future.result()
    for series, png in zip(stale, drawn, strict=True):
        pngs[series.account_id] = png
    atomic_write_bytes(
        Path(data_dir) / TEARSHEET_DIR / DIGEST_FILE,
        json.dumps(wanted, sort_keys=True, indent=0).encode(),
    )
    return pngs, [s.account_id for s in stale]


def tearsheet_path(data_dir: Path, account_id: str) -> Path:
    """``<data_dir>/tearsheets/<account_id>.png``."""
    return Path(data_dir) / TEARSHEET_DIR / f"{account_id}.png"


def markdown_section(
    series: AccountSeries, money_weighted: float | None, path: Path, png: bytes
) -> str:
    data_uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return (
        f"### {series.account_id} ({series.currency})\n\n"
        f"{series.dates[0]}..{series.dates[-1]}: TWR {_pct(series.twr)}, "
        f"XIRR {_pct(money_weighted)}, max drawdown {_pct(series.max_drawdown)}  \n"
        f"`{path}`\n\n![{series.account_id}]({data_uri})\n"
    )
