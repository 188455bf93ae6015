"""The world's market: a fixed instrument universe, daily closes and FX rates.

Closes follow a seeded geometric random walk per business-day index (0 = inception), quantized to
each instrument's tick; options are priced off their underlying (Black-Scholes, constant vol).
FX: each currency is stored as USD per unit (8 places); every cross is derived as
``usd_per[a] / usd_per[b]`` quantized to 8 places, so ``fx_rate`` is one table per day.
Derivative expiries lie ``HORIZON_YEARS`` after inception; the world ends a month before them.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from ibpipeline.world.model import CENT, Instrument

CURRENCIES = ("USD", "EUR", "CHF", "GBP")
FX_PLACES = Decimal("0.00000001")
HORIZON_YEARS = 6
_USD_PER_START = {"USD": 1.0, "EUR": 1.0950, "CHF": 1.1880, "GBP": 1.2730}
_FX_VOL = {"USD": 0.0, "EUR": 0.0040, "CHF": 0.0045, "GBP": 0.0050}
_TRADING_DAYS = 252.0


@dataclass(frozen=True, slots=True)
class _Spec:
    """Random-walk parameters of an instrument: start price, annual drift and volatility."""

    start: float
    drift: float
    vol: float


def third_friday(year: int, month: int) -> date:
    """Third Friday of a month (standard equity-derivative expiry)."""
    first = date(year, month, 1)
    return first + timedelta(days=(4 - first.weekday()) % 7 + 14)


def occ_symbol(root: str, expiry: date, put_call: str, strike: Decimal) -> str:
    """OCC option symbol: root padded to 6, yymmdd, C/P, strike * 1000 in 8 digits."""
    return f"{root:<6}{expiry:%y%m%d}{put_call}{int(strike * 1000):08d}"


def _stock(conid, symbol, desc, ccy, exch, isin, spec, div, months, wht, sub="COMMON"):
    return (
        Instrument(
            conid=conid,
            symbol=symbol,
            description=desc,
            asset_category="STK",
            currency=ccy,
            listing_exchange=exch,
            isin=isin,
            sub_category=sub,
            dividend=Decimal(div),
            dividend_months=months,
            withholding_rate=Decimal(wht),
        ),
        _Spec(*spec),
    )


_STOCKS = (
    _stock(265598, "AAPL", "APPLE INC", "USD", "NASDAQ", "US0378331005",
           (185.64, 0.12, 0.24), "0.24", (2, 5, 8, 11), "0.15"),
    _stock(272093, "MSFT", "MICROSOFT CORP", "USD", "NASDAQ", "US5949181045",
           (370.87, 0.14, 0.22), "0.75", (3, 6, 9, 12), "0.15"),
    _stock(4815747, "NVDA", "NVIDIA CORP", "USD", "NASDAQ", "US67066G1040",
           (48.17, 0.30, 0.45), "0.01", (3, 6, 9, 12), "0.15"),
    _stock(8719, "JNJ", "JOHNSON & JOHNSON", "USD", "NYSE", "US4781601046",
           (156.82, 0.03, 0.15), "1.19", (3, 6, 9, 12), "0.15"),
    _stock(8894, "KO", "COCA-COLA CO/THE", "USD", "NYSE", "US1912161007",
           (59.81, 0.04, 0.14), "0.46", (4, 7, 10, 12), "0.15"),
    _stock(756733, "SPY", "SPDR S&P 500 ETF TRUST", "USD", "ARCA", "US78462F1030",
           (472.65, 0.09, 0.16), "1.59", (1, 4, 7, 10), "0.15", "ETF"),
    _stock(14204, "SAP", "SAP SE", "EUR", "IBIS", "DE0007164600",
           (139.48, 0.15, 0.24), "2.20", (5,), "0.26375"),
    _stock(14237, "SIE", "SIEMENS AG-REG", "EUR", "IBIS", "DE0007236101",
           (169.24, 0.08, 0.22), "4.70", (2,), "0.26375"),
    _stock(117902840, "ASML", "ASML HOLDING NV", "EUR", "AEB", "NL0010273215",
           (681.70, 0.12, 0.32), "1.52", (5, 8, 11), "0.15"),
    _stock(39939906, "NESN", "NESTLE SA-REG", "CHF", "EBS", "CH0038863350",
           (97.52, 0.01, 0.14), "3.00", (4,), "0.35"),
    _stock(13905, "NOVN", "NOVARTIS AG-REG", "CHF", "EBS", "CH0012005267",
           (84.90, 0.06, 0.17), "3.30", (3,), "0.35"),
    _stock(13903, "ROG", "ROCHE HOLDING AG-GENUSSCHEIN", "CHF", "EBS", "CH0012032048",
           (244.55, 0.00, 0.19), "9.60", (3,), "0.35"),
    _stock(162289573, "SHEL", "SHELL PLC", "GBP", "LSE", "GB00BP6MXD84",
           (25.78, 0.05, 0.21), "0.27", (3, 6, 9, 12), "0"),
    _stock(1148, "HSBA", "HSBC HOLDINGS PLC", "GBP", "LSE", "GB0005405286",
           (6.35, 0.07, 0.20), "0.10", (4, 6, 9, 12), "0"),
)  # fmt: skip

_OPTION_SPECS = (  # (conid, underlying conid, put_call, strike as fraction of start, exchange)
    (601001, 265598, "C", 1.10, "CBOE"),
    (601002, 756733, "P", 0.90, "CBOE"),
    (601003, 14204, "C", 1.10, "EUREX"),
)
_OPTION_VOL = {265598: 0.26, 756733: 0.18, 14204: 0.25}


# Opt-in position events (``World(position_events=True)``): business-day indexes from inception
TRANSFER_DAY, SPLIT_DAY, REVERSE_SPLIT_DAY, ISIN_CHANGE_DAY, EXPIRY_DAY = 3, 5, 7, 9, 11
MERGER_DAY, SPINOFF_DAY, TRANSFER_OUT_DAY = 13, 15, 17
SPLIT_CONID = 910001  # 2 for 1 forward split, same conid (IBKR: one FS row adding the shares)
REVERSE_OLD, REVERSE_NEW = 910011, 910012  # 1 for 10 reverse split: a new conid and ISIN
ISIN_OLD, ISIN_NEW = 910021, 910022  # CUSIP/ISIN change: a new conid, same price
CALL_EXPIRING, PUT_ASSIGNED = 910031, 910032  # AAPL options expiring on EXPIRY_DAY
CALL_EXERCISED = 910033  # deep in-the-money AAPL call, held long and exercised on EXPIRY_DAY
MERGER_TARGET, MERGER_ACQUIRER = 910041, 910042  # TC: each target share -> 1/2 acquirer + cash
SPINOFF_PARENT, SPINOFF_CHILD = 910051, 910052  # SO: 1 child share per 5 parent shares
TRANSFER_CONID = 8719  # JNJ: 25 shares arrive by ACATS on TRANSFER_DAY
TRANSFER_OUT_CONID, TRANSFER_OUT_QUANTITY = ISIN_NEW, Decimal(10)  # leave by ACATS, day 17
SPLIT_RATIO, REVERSE_RATIO = Decimal(2), Decimal(10)
MERGER_SHARES, MERGER_CASH = Decimal("0.5"), Decimal("5.00")  # per target share (USD)
SPINOFF_RATIO = Decimal("0.2")  # child shares per parent share
EVENT_CONIDS = frozenset(
    {SPLIT_CONID, REVERSE_OLD, REVERSE_NEW, ISIN_OLD, ISIN_NEW, CALL_EXPIRING, PUT_ASSIGNED,
     CALL_EXERCISED, MERGER_TARGET, MERGER_ACQUIRER, SPINOFF_PARENT, SPINOFF_CHILD}
)  # fmt: skip
"""Instruments only the scripted events trade (random trading never picks them)."""
_EVENT_STOCKS = (
    _stock(SPLIT_CONID, "SPLT", "SPLITCO INC", "USD", "NYSE", "US9100010018",
           (80.0, 0.05, 0.25), "0", (), "0.15"),
    _stock(REVERSE_OLD, "RVRS", "REVERSECO INC", "USD", "NASDAQ", "US9100110016",
           (3.0, 0.0, 0.40), "0", (), "0.15"),
    _stock(ISIN_OLD, "ISNC", "ISINCO CORP", "USD", "NYSE", "US9100210012",
           (25.0, 0.03, 0.20), "0", (), "0.15"),
    _stock(MERGER_TARGET, "MRGR", "MERGECO INC", "USD", "NYSE", "US9100410018",
           (40.0, 0.02, 0.20), "0", (), "0.15"),
    _stock(MERGER_ACQUIRER, "ACQR", "ACQUIRECO CORP", "USD", "NYSE", "US9100420017",
           (70.0, 0.05, 0.22), "0", (), "0.15"),
    _stock(SPINOFF_PARENT, "PRNT", "PARENTCO INC", "USD", "NYSE", "US9100510015",
           (60.0, 0.04, 0.25), "0", (), "0.15"),
)  # fmt: skip
_DERIVED = {
    REVERSE_NEW: (REVERSE_OLD, REVERSE_RATIO),
    ISIN_NEW: (ISIN_OLD, Decimal(1)),
    SPINOFF_CHILD: (SPINOFF_PARENT, Decimal("0.75")),
}
"""New conids of an action: price = the old conid's walk x factor."""


def business_day(inception: date, index: int) -> date:
    """Business day ``index`` (0 = ``inception``, a business day)."""
    d = inception
    for _ in range(index):
        d += timedelta(days=1)
        while d.weekday() >= 5:
            d += timedelta(days=1)
    return d


def _event_instruments(inception: date, instruments: dict[int, Instrument]) -> None:
    """Add the event-only instruments (stocks' walk specs are in ``_EVENT_STOCKS``)."""
    for old, (new, isin, symbol) in {
        REVERSE_OLD: (REVERSE_NEW, "US9100110024", "RVRS"),
        ISIN_OLD: (ISIN_NEW, "US9100210020", "ISNC"),
    }.items():
        base = instruments[old]
        instruments[new] = Instrument(
            conid=new,
            symbol=symbol,
            description=base.description,
            asset_category="STK",
            currency=base.currency,
            listing_exchange=base.listing_exchange,
            isin=isin,
            sub_category="COMMON",
        )
        instruments[old] = Instrument(
            **{**{f: getattr(base, f) for f in base.__slots__}, "symbol": f"{symbol}.OLD"}
        )
    parent = instruments[SPINOFF_PARENT]
    instruments[SPINOFF_CHILD] = Instrument(
        conid=SPINOFF_CHILD,
        symbol="SPIN",
        description="SPINCO INC",
        asset_category="STK",
        currency=parent.currency,
        listing_exchange=parent.listing_exchange,
        isin="US9100520014",
        sub_category="COMMON",
    )
    expiry = business_day(inception, EXPIRY_DAY)
    aapl = instruments[265598]
    for conid, pc, strike in (
        (CALL_EXPIRING, "C", Decimal(400)),
        (PUT_ASSIGNED, "P", Decimal(300)),
        (CALL_EXERCISED, "C", Decimal(100)),
    ):
        instruments[conid] = Instrument(
            conid=conid,
            symbol=occ_symbol("AAPL", expiry, pc, strike),
            description=f"AAPL {expiry:%d%b%y}".upper() + f" {strike} {pc}",
            asset_category="OPT",
            currency="USD",
            listing_exchange="CBOE",
            multiplier=Decimal(100),
            sub_category="CALL" if pc == "C" else "PUT",
            underlying_symbol=aapl.symbol,
            underlying_conid=aapl.conid,
            expiry=expiry,
            strike=strike,
            put_call=pc,
        )


def build_universe(
    inception: date, position_events: bool = False
) -> tuple[dict[int, Instrument], dict[int, _Spec], date]:
    """The fixed universe for a world starting at ``inception``: instruments by conid, walk specs
    (derivatives excluded) and the horizon (last simulated day, a month before the first expiry).
    ``position_events`` adds the event-only instruments (:data:`EVENT_CONIDS`)."""
    instruments: dict[int, Instrument] = {}
    specs: dict[int, _Spec] = {}
    for inst, spec in _STOCKS:
        instruments[inst.conid] = inst
        specs[inst.conid] = spec
    expiry = third_friday(inception.year + HORIZON_YEARS, 12)
    for conid, under_id, pc, moneyness, exch in _OPTION_SPECS:
        under = instruments[under_id]
        start = specs[under_id].start
        step = 5 if start > 100 else 1
        strike = Decimal(int(round(start * moneyness / step)) * step)
        sym = occ_symbol(under.symbol, expiry, pc, strike)
        kind = "CALL" if pc == "C" else "PUT"
        instruments[conid] = Instrument(
            conid=conid,
            symbol=sym,
            description=f"{under.symbol} {expiry:%d%b%y}".upper() + f" {strike} {pc}",
            asset_category="OPT",
            currency=under.currency,
            listing_exchange=exch,
            multiplier=Decimal(100),
            sub_category=kind,
            underlying_symbol=under.symbol,
            underlying_conid=under_id,
            expiry=expiry,
            strike=strike,
            put_call=pc,
        )
    month_code = "Z" + str(expiry.year % 10)
    futures = (
        (701001, "ES", "USD", "CME", Decimal(50), Decimal("0.25"),
         _Spec(4780.0, 0.09, 0.16)),
        (701002, "FGBL", "EUR", "EUREX", Decimal(1000), Decimal("0.01"),
         _Spec(136.50, -0.01, 0.06)),
    )  # fmt: skip
    for conid, root, ccy, exch, mult, tick, spec in futures:
        instruments[conid] = Instrument(
            conid=conid,
            symbol=root + month_code,
            description=f"{root} {expiry:%d%b%y}".upper(),
            asset_category="FUT",
            currency=ccy,
            listing_exchange=exch,
            multiplier=mult,
            underlying_symbol=root,
            underlying_conid=conid + 1000,
            expiry=expiry,
            tick=tick,
        )
        specs[conid] = spec
    bonds = (
        (801001, "T 4 1/4 11/15/34", "US91282CLW90", "USD", date(2034, 11, 15), "0.0425",
         (5, 11), _Spec(99.20, 0.0, 0.05)),
        (801002, "DBR 2.6 08/15/34", "DE000BU2Z031", "EUR", date(2034, 8, 15), "0.026",
         (8,), _Spec(101.10, 0.0, 0.04)),
    )  # fmt: skip
    for conid, sym, isin, ccy, maturity, coupon, months, spec in bonds:
        instruments[conid] = Instrument(
            conid=conid,
            symbol=sym,
            description=sym,
            asset_category="BOND",
            currency=ccy,
            listing_exchange="",
            isin=isin,
            sub_category="Corp" if ccy == "EUR" else "Govt",
            maturity=maturity,
            coupon_rate=Decimal(coupon),
            coupon_months=months,
            tick=Decimal("0.001"),
        )
        specs[conid] = spec
    if position_events:  # after the others' (their walks draw after the other instruments')
        for inst, spec in _EVENT_STOCKS:
            instruments[inst.conid] = inst
            specs[inst.conid] = spec
    return instruments, specs, expiry - timedelta(days=31)


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def black_scholes(spot: float, strike: float, years: float, vol: float, put_call: str) -> float:
    """Black-Scholes price with a 3 % rate and no dividends."""
    rate = 0.03
    sq = vol * math.sqrt(years)
    d1 = (math.log(spot / strike) + (rate + vol * vol / 2) * years) / sq
    d2 = d1 - sq
    disc = math.exp(-rate * years)
    if put_call == "C":
        return spot * _norm_cdf(d1) - strike * disc * _norm_cdf(d2)
    return strike * disc * _norm_cdf(-d2) - spot * _norm_cdf(-d1)


def quantize(value: float | Decimal, step: Decimal) -> Decimal:
    """Round to a multiple of ``step`` (half-even), never below one step for prices."""
    q = (Decimal(value) / step).quantize(Decimal(1), ROUND_HALF_EVEN) * step
    return max(q, step)


@dataclass(frozen=True, slots=True)
class MarketDay:
    """Closes (instrument currency) and the full FX cross table of one business day."""

    date: date
    closes: dict[int, Decimal]
    fx: dict[tuple[str, str], Decimal]


class Market:
    """Lazily generated, cached market days (index 0 = inception); ``opening`` holds the prices
    before inception (the walk's starting points), used as "previous close" of day 0."""

    def __init__(self, seed: int, inception: date, position_events: bool = False) -> None:
        self.instruments, self._specs, self.horizon = build_universe(inception, position_events)
        if position_events:
            _event_instruments(inception, self.instruments)
        self.position_events = position_events
        self._rng = random.Random(f"market:{seed}")
        self._levels = {conid: spec.start for conid, spec in self._specs.items()}
        self._usd_per = dict(_USD_PER_START)
        self.days: list[MarketDay] = []
        self.opening = self._snapshot(inception - timedelta(days=1), inception)

    def extend(self, dates: list[date]) -> None:
        """Generate the market days for ``dates`` (the next business days, in order)."""
        for d in dates:
            self._step()
            self.days.append(self._snapshot(d, d))

    def _step(self) -> None:
        rng = self._rng
        dt = 1.0 / _TRADING_DAYS
        for conid, spec in self._specs.items():
            level = self._levels[conid]
            if self.instruments[conid].asset_category == "BOND":  # mean-reverting around start
                shock = rng.gauss(0.0, spec.vol * math.sqrt(dt)) * 100
                self._levels[conid] = level + 0.05 * (spec.start - level) + shock
                continue
            z = rng.gauss(0.0, 1.0)
            self._levels[conid] = level * math.exp(
                (spec.drift - spec.vol * spec.vol / 2) * dt + spec.vol * math.sqrt(dt) * z
            )
        for ccy, vol in _FX_VOL.items():
            if vol:
                self._usd_per[ccy] *= math.exp(rng.gauss(0.0, vol))

    def _snapshot(self, d: date, valuation: date) -> MarketDay:
        closes: dict[int, Decimal] = {}
        for conid, level in self._levels.items():
            closes[conid] = quantize(level, self.instruments[conid].tick)
        if self.position_events:  # index of the day being made: len(days) (opening: -1)
            index = len(self.days) if valuation == d else -1
            if index >= SPLIT_DAY:
                level = self._levels[SPLIT_CONID] / float(SPLIT_RATIO)
                closes[SPLIT_CONID] = quantize(level, CENT)
            for new, (old, factor) in _DERIVED.items():
                closes[new] = quantize(self._levels[old] * float(factor), CENT)
        for inst in self.instruments.values():
            if inst.asset_category == "OPT":
                spot = float(closes[inst.underlying_conid])
                years = max((inst.expiry - valuation).days, 1) / 365.0
                vol = _OPTION_VOL[inst.underlying_conid]
                price = black_scholes(spot, float(inst.strike), years, vol, inst.put_call)
                closes[inst.conid] = quantize(price, inst.tick)
        usd = {c: Decimal(v).quantize(FX_PLACES) for c, v in self._usd_per.items()}
        fx = {
            (a, b): Decimal(1) if a == b else (usd[a] / usd[b]).quantize(FX_PLACES)
            for a in CURRENCIES
            for b in CURRENCIES
        }
        return MarketDay(d, closes, fx)
