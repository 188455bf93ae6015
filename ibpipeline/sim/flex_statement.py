"""Render the simulated world as an IBKR Activity Flex statement (``FlexQueryResponse type="AF"``).

One ``FlexStatement`` per account with, in IBKR's order: AccountInformation, EquitySummaryInBase,
ChangeInNAV, CashReport, OpenPositions, FxPositions, Trades, TransactionTaxes, OptionEAE,
PendingExcercises (sic), PriorPeriodPositions, CorporateActions, CashTransactions,
InterestAccruals, Transfers, ConversionRates. Attribute names are those of real statements;
numbers are plain decimals, missing values empty strings, date-times New York local time.

Figures (all reproduce the world exactly):
- EquitySummaryByReportDateInBase: one row per business day of the window plus the business day
  before ``from_date``; days before the world's inception are all-zero rows.
- ChangeInNAV: base currency. ``realized`` and ``changeInUnrealized`` are 0 and ``fxTranslation``
  0, as in IBKR's MTM presentation; ``mtm`` is ending - starting - the listed flows, so the
  attributes add up exactly. ``twr`` = 100 * (prod(1 + daily_return) - 1), 9 decimals.
- CashReport: per currency, starting + deposits + withdrawals + dividends + brokerInterest +
  bondInterest + withholdingTax + commissions + otherFees + advisorFees + netTradesSales +
  netTradesPurchases + cashSettlingMtm (futures variation) = endingCash. BASE_SUMMARY converts each
  flow at its day's rate and start/end cash at their days' rates; fxTranslationGainLoss closes it.
  Commissions count in their ``ibCommissionCurrency`` (the base currency for FX conversions of a
  world built with ``fx_commission_in_base``).

Position events of a world built with ``position_events`` (empty sections otherwise):
CorporateActions DETAIL rows (signed quantity per conid; a reverse split, ISIN change or merger as
the pair old -n / new +m, a spin-off as one row adding the new company; a merger's cash in
``proceeds`` and in the CashReport's ``other``) each repeated as a SUMMARY row with
``accountId="-"``; Transfers rows (ACATS, IN and OUT, OUT with negative quantity and amount); the
option expiry, exercise and assignment as book trades in Trades (notes Ep / Ex / A,
transactionType BookTrade) and again in OptionEAE (Expiration / Exercise / Assignment and the
stock leg Buy/Sell, same tradeID); ChangeInNAV ``assetTransfers`` holds the value transferred in
less the value transferred out.

Real-statement quirks (:class:`StatementQuirks`, all off by default: the output is then unchanged)
imitate what IBKR writes: sub-account ids on some trade rows, omitted sections, date-time
separators, time formats and zones, netCash="0" on FX conversions, a wrong ``count``. Always
written, as IBKR does: the EquitySummary row of the day before ``from_date`` (the opening NAV) and
one FlexStatement per account (several per response).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from ibpipeline.world import AccountDay, DividendAccrual, Instrument, Lot, Trade, World

NEW_YORK = ZoneInfo("America/New_York")
ZERO = Decimal(0)
_DATE_FORMATS = {  # date setting -> (strftime date, strftime time) as IBKR pairs them
    "yyyyMMdd": ("%Y%m%d", "%H%M%S"),
    "yyyy-MM-dd": ("%Y-%m-%d", "%H:%M:%S"),
    "MM/dd/yyyy": ("%m/%d/%Y", "%H:%M:%S"),
    "MM/dd/yy": ("%m/%d/%y", "%H:%M:%S"),
    "dd/MM/yyyy": ("%d/%m/%Y", "%H:%M:%S"),
    "dd/MM/yy": ("%d/%m/%y", "%H:%M:%S"),
    "dd-MMM-yy": ("%d-{mon}-%y", "%H:%M:%S"),
}
DATE_FORMATS = tuple(_DATE_FORMATS)
"""Every Flex date setting the renderer writes (those of ``ibpipeline.flex.dates``)."""
_TIME_FORMATS = {"HHmmss": "%H%M%S", "HH:mm:ss": "%H:%M:%S"}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
SUB_ACCOUNT_SUFFIX = "F"
OMITTABLE_SECTIONS = frozenset({"OpenPositions", "PriorPeriodPositions"})
_TWR_PLACES = Decimal("1E-9")
_PCT_PLACES = Decimal("0.01")
_PRICE_PLACES = Decimal("1E-9")

_EQUITY_FIELDS = (
    "cash", "brokerCashComponent", "fdicInsuredBankSweepAccountCashComponent",
    "slbCashCollateral", "stock", "ipoSubscription", "slbDirectSecuritiesBorrowed",
    "slbDirectSecuritiesLent", "options", "bonds", "commodities", "notes", "funds", "crypto",
    "dividendAccruals", "interestAccruals", "brokerInterestAccrualsComponent",
    "fdicInsuredAccountInterestAccrualsComponent", "softDollars", "forexCfdUnrealizedPl",
    "cfdUnrealizedPl", "total",
)  # fmt: skip
_CNAV_FIELDS = (
    "startingValue", "mtm", "realized", "changeInUnrealized", "costAdjustments",
    "transferredPnlAdjustments", "depositsWithdrawals", "internalCashTransfers", "excessFundSweep",
    "assetTransfers", "debitCardActivity", "billPay", "grantActivity", "dividends",
    "withholdingTax", "withholding871m", "withholdingTaxCollected", "changeInDividendAccruals",
    "interest", "changeInInterestAccruals", "advisorFees", "clientFees", "otherFees",
    "feesReceivables", "commissions", "commissionCreditsRedemption", "commissionReceivables",
    "forexCommissions", "transactionTax", "taxReceivables", "salesTax", "billableSalesTax",
    "softDollars", "netFxTrading", "fxTranslation", "linkingAdjustments", "other", "endingValue",
    "twr", "corporateActionProceeds",
)  # fmt: skip
_CASH_FIELDS = (
    "startingCash", "clientFees", "commissions", "referralFee", "commissionCreditsRedemption",
    "billableCommissions", "depositWithdrawals", "deposits", "withdrawals", "carbonCredits",
    "donations", "accountTransfers", "linkingAdjustments", "internalTransfers", "paxosTransfers",
    "excessFundSweep", "debitCardActivity", "billPay", "dividends", "insuredDepositInterest",
    "brokerInterest", "brokerFees", "bondInterest", "cashSettlingMtm", "realizedVm",
    "realizedForexVm", "cfdCharges", "netTradesSales", "netTradesPurchases", "advisorFees",
    "feesReceivables", "paymentInLieu", "transactionTax", "taxReceivables", "withholdingTax",
    "withholding871m", "withholdingCollectedTax", "salesTax", "billableSalesTax",
    "ipoSubscription", "fxTranslationGainLoss", "otherFees", "otherIncome", "other", "endingCash",
    "endingSettledCash", "slbStartingCashCollateral", "slbNetSecuritiesLentActivity",
    "slbEndingCashCollateral", "slbNetCash", "slbNetSettledCash",
)  # fmt: skip
_CASH_TYPE_FIELD = {
    "Deposits/Withdrawals": "depositWithdrawals",
    "Dividends": "dividends",
    "Withholding Tax": "withholdingTax",
    "Broker Interest Received": "brokerInterest",
    "Broker Interest Paid": "brokerInterest",
    "Bond Interest Received": "bondInterest",
    "Other Fees": "otherFees",
    "Advisor Fees": "advisorFees",
}
_CNAV_TYPE_FIELD = {
    "Deposits/Withdrawals": "depositsWithdrawals",
    "Dividends": "dividends",
    "Withholding Tax": "withholdingTax",
    "Broker Interest Received": "interest",
    "Broker Interest Paid": "interest",
    "Bond Interest Received": "interest",
    "Other Fees": "otherFees",
    "Advisor Fees": "advisorFees",
}
_CASH_FLOW_FIELDS = (
    "deposits", "withdrawals", "dividends", "brokerInterest", "bondInterest", "withholdingTax",
    "commissions", "otherFees", "advisorFees", "netTradesSales", "netTradesPurchases",
    "cashSettlingMtm", "other",
)  # fmt: skip
_EMPTY_BEFORE_TRADES = ("FxPositions",)
_OPTION_EVENT_TYPES = {"A": "Assignment", "Ex": "Exercise", "Ep": "Expiration"}


def _lot_pnls(trade: Trade) -> list[tuple[Lot, Decimal]]:
    """The lots a closing trade consumed, each with its share of the trade's realized P&L
    (proceeds net of commission pro rata to quantity, to the cent, less the lot's cost; the last
    lot takes the rest so the shares add up to ``trade.realized_pnl``)."""
    out, remaining = [], trade.realized_pnl
    gross = trade.proceeds + trade.commission
    for i, lot in enumerate(trade.closed_lots):
        if i == len(trade.closed_lots) - 1:
            pnl = remaining
        else:
            pnl = (gross * abs(lot.quantity) / abs(trade.quantity)).quantize(Decimal("0.01"))
            pnl -= lot.cost_basis_money
        remaining -= pnl
        out.append((lot, pnl))
    return out


_US_REGULATORY_SELL = Decimal("0.0000278")  # SEC section 31 fee per USD of sale proceeds
_FINRA_TAF = Decimal("0.000166")  # FINRA trading activity fee per share sold


def tiered_components(trade: Trade, inst: Instrument) -> dict[str, Decimal]:
    """IBKR Tiered pricing's parts of a commission (signed like it, < 0; commission currency):
    exchange fee (thirdPartyExecutionCharge), clearing fee (thirdPartyClearingCharge), and on US
    sales the SEC fee and FINRA TAF, each to the cent and never more than what is left of the
    commission; the broker's execution charge is the rest, so the parts add up exactly."""
    n, left = abs(trade.quantity), -trade.commission
    per_unit = {"STK": ("0.0030", "0.0002"), "OPT": ("0.20", "0.02")}
    exch, clear = per_unit.get(inst.asset_category, ("0", "0"))
    wanted = {
        "thirdPartyExecutionCharge": n * Decimal(exch),
        "thirdPartyClearingCharge": n * Decimal(clear),
        "regSection31TransactionFee": ZERO,
        "regFINRATradingActivityFee": ZERO,
    }
    if trade.quantity < 0 and inst.currency == "USD" and inst.asset_category in ("STK", "OPT"):
        wanted["regSection31TransactionFee"] = abs(trade.proceeds) * _US_REGULATORY_SELL
        wanted["regFINRATradingActivityFee"] = n * _FINRA_TAF
    parts: dict[str, Decimal] = {}
    for name, amount in wanted.items():
        take = min(amount.quantize(Decimal("0.01")), left)
        parts[name] = -take
        left -= take
    return {
        "brokerExecutionCharge": -left,
        "brokerClearingCharge": ZERO,
        "thirdPartyRegulatoryCharge": ZERO,
        "regOther": ZERO,
        "other": ZERO,
        **parts,
    }


def num(value: Decimal | int) -> str:
    """A plain decimal without exponent or trailing zeros (``-0`` becomes ``0``)."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def esc(text: str) -> str:
    """Escape text for a double-quoted XML attribute."""
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


@dataclass(frozen=True)
class StatementQuirks:
    """Real-statement quirks to write (every one off by default; see each file in SOURCES.md).

    - ``sub_account_categories``: asset categories (e.g. ``{"OPT", "FUT"}``) whose Trades rows
      (ORDER, EXECUTION, CLOSED_LOT) carry ``accountId="<account>F"`` inside the account's
      statement, as ``ibflexreader_cash_report_trades.xml`` does for its OPT/FUT trades.
    - ``omit_sections``: sections left out entirely (``OpenPositions``, ``PriorPeriodPositions``),
      as queries without them return.
    - ``datetime_separator``: between date and time: ``;`` (IBKR's default), ``", "``
      (``2013-03-05, 19:45:00``), ``" "`` (``2025-05-22 20:41:57``), ``""`` or ``"T"``.
    - ``time_format``: ``HHmmss`` or ``HH:mm:ss`` (None: IBKR's pairing with the date format,
      ``HHmmss`` for yyyyMMdd else ``HH:mm:ss``; ``yyyy-MM-dd;HHmmss`` is real too).
    - ``time_zone``: append the New York zone abbreviation (`` EDT``/`` EST``) to date-times.
    - ``fx_net_cash_zero``: CASH (FX conversion) trade rows print ``netCash="0"``, as IBKR does.
    - ``statements_count``: the ``FlexStatements count`` written (None: the true number).
    """

    sub_account_categories: frozenset[str] = frozenset()
    omit_sections: frozenset[str] = frozenset()
    datetime_separator: str = ";"
    time_format: str | None = None
    time_zone: bool = False
    fx_net_cash_zero: bool = False
    statements_count: int | None = None

    def __post_init__(self) -> None:
        unknown = set(self.omit_sections) - OMITTABLE_SECTIONS
        if unknown:
            raise ValueError(
                f"cannot omit {sorted(unknown)}; omittable: {sorted(OMITTABLE_SECTIONS)}"
            )
        if self.datetime_separator not in (";", ", ", " ", "", "T"):
            raise ValueError(f"unsupported datetime_separator {self.datetime_separator!r}")
        if self.time_format is not None and self.time_format not in _TIME_FORMATS:
            raise ValueError(f"unsupported time_format {self.time_format!r}")

    def account_id(self, account_id: str, asset_category: str) -> str:
        """The ``accountId`` a Trades row of ``asset_category`` is written with."""
        if asset_category in self.sub_account_categories:
            return account_id + SUB_ACCOUNT_SUFFIX
        return account_id


NO_QUIRKS = StatementQuirks()
_SEPARATORS = {"semicolon": ";", "comma": ", ", "space": " ", "none": "", "T": "T"}


def parse_quirks(spec: str) -> StatementQuirks:
    """Quirks from a command-line spec: comma-separated ``sub_accounts=OPT+FUT``,
    ``omit=OpenPositions+PriorPeriodPositions``, ``separator=semicolon|comma|space|none|T``,
    ``time=HHmmss|HH:mm:ss``, ``zone``, ``fx_net_cash_zero``, ``count=<n>`` ("" = none).
    Raises ValueError on an unknown item."""
    kwargs: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, _, value = item.partition("=")
        if key == "sub_accounts":
            kwargs["sub_account_categories"] = frozenset(value.split("+"))
        elif key == "omit":
            kwargs["omit_sections"] = frozenset(value.split("+"))
        elif key == "separator" and value in _SEPARATORS:
            kwargs["datetime_separator"] = _SEPARATORS[value]
        elif key == "time":
            kwargs["time_format"] = value
        elif key == "zone" and not value:
            kwargs["time_zone"] = True
        elif key == "fx_net_cash_zero" and not value:
            kwargs["fx_net_cash_zero"] = True
        elif key == "count" and value.isdigit():
            kwargs["statements_count"] = int(value)
        else:
            raise ValueError(f"unknown statement quirk {item!r}")
    return StatementQuirks(**kwargs)


class _Fmt:
    """Date and date-time formatting for one statement (cached per date)."""

    def __init__(self, date_format: str, quirks: StatementQuirks = NO_QUIRKS) -> None:
        if date_format not in _DATE_FORMATS:
            raise ValueError(
                f"unsupported date_format {date_format!r}; use one of {', '.join(_DATE_FORMATS)}"
            )
        self._date, self._time = _DATE_FORMATS[date_format]
        if quirks.time_format is not None:
            self._time = _TIME_FORMATS[quirks.time_format]
        self._sep = quirks.datetime_separator
        self._zone = quirks.time_zone
        self._cache: dict[date, str] = {}

    def d(self, day: date | None) -> str:
        """A date in the statement's format ("" for None)."""
        if day is None:
            return ""
        text = self._cache.get(day)
        if text is None:
            pattern = self._date.replace("{mon}", _MONTHS[day.month - 1])
            text = self._cache[day] = day.strftime(pattern)
        return text

    def dt(self, at: datetime | None) -> str:
        """A UTC instant as New York local ``<date><separator><time>[ <zone>]`` ("" for None)."""
        if at is None:
            return ""
        local = at.astimezone(NEW_YORK)
        text = f"{self.d(local.date())}{self._sep}{local.strftime(self._time)}"
        return f"{text} {local.tzname()}" if self._zone else text


def _instrument_block(inst: Instrument, fmt: _Fmt) -> tuple[str, str]:
    """The security attributes shared by position, trade and cash rows, split around the value of
    ``description`` (cash transactions describe themselves)."""
    cusip = inst.isin[2:11] if inst.isin.startswith("US") else ""
    under = inst.underlying_symbol or inst.symbol
    before = (
        f' assetCategory="{inst.asset_category}" subCategory="{esc(inst.sub_category)}"'
        f' symbol="{esc(inst.symbol)}" description="'
    )
    after = (
        f'" conid="{inst.conid}" securityID="{inst.isin}" securityIDType="{"ISIN" if inst.isin else ""}"'
        f' cusip="{cusip}" isin="{inst.isin}" figi="" listingExchange="{inst.listing_exchange}"'
        f' underlyingConid="{inst.underlying_conid or ""}" underlyingSymbol="{esc(under)}"'
        f' underlyingSecurityID="" underlyingListingExchange="" issuer=""'
        f' issuerCountryCode="{inst.isin[:2]}" multiplier="{num(inst.multiplier)}"'
        f' strike="{num(inst.strike) if inst.strike is not None else ""}"'
        f' expiry="{fmt.d(inst.expiry)}" putCall="{inst.put_call}" principalAdjustFactor=""'
    )
    return before, after


def _fx_block(symbol: str) -> str:
    return (
        f' assetCategory="CASH" subCategory="" symbol="{symbol}" description="{symbol}" conid=""'
        ' securityID="" securityIDType="" cusip="" isin="" figi="" listingExchange=""'
        ' underlyingConid="" underlyingSymbol="" underlyingSecurityID=""'
        ' underlyingListingExchange="" issuer="" issuerCountryCode="" multiplier="1" strike=""'
        ' expiry="" putCall="" principalAdjustFactor=""'
    )


_NO_INSTRUMENT = (
    ' assetCategory="" subCategory="" symbol="" description="{}" conid="" securityID=""'
    ' securityIDType="" cusip="" isin="" figi="" listingExchange="" underlyingConid=""'
    ' underlyingSymbol="" underlyingSecurityID="" underlyingListingExchange="" issuer=""'
    ' issuerCountryCode="" multiplier="0" strike="" expiry="" putCall="" principalAdjustFactor=""'
)


def _section(name: str, rows: Iterable[str]) -> str:
    """``<name>`` rows ``</name>``; an empty section as IBKR writes it (open, newline, close)."""
    body = "".join(rows)
    return f"<{name}>\n{body}</{name}>\n"


def _settle_date(world: World, trade: Trade, inst: Instrument | None) -> date:
    """T+1 for derivatives, US bonds and US stocks from 2024-05-28, else T+2 (business days)."""
    one_day = trade.asset_category in ("OPT", "FUT") or (
        inst is not None
        and inst.currency == "USD"
        and (inst.asset_category == "BOND" or trade.trade_date >= date(2024, 5, 28))
    )
    days = world.business_days(
        trade.trade_date + timedelta(days=1), trade.trade_date + timedelta(7)
    )
    return days[0] if one_day else days[1]


class _Statement:
    """Renders one account's FlexStatement."""

    def __init__(self, world: World, account_id: str, from_date: date, to_date: date, fmt: _Fmt,
                 period: str, generated: str, described: dict[int, tuple[str, str]],
                 quirks: StatementQuirks = NO_QUIRKS) -> None:  # fmt: skip
        self.world = world
        self.quirks = quirks
        self.account = world.account(account_id)
        self.base = self.account.base_currency
        self.fmt = fmt
        self.period = period
        self.generated = generated
        self.from_date, self.to_date = from_date, to_date
        self.described = described
        self.blocks = {
            c: f"{before}{esc(world.instruments[c].description)}{after}"
            for c, (before, after) in described.items()
        }
        self.head = f'accountId="{account_id}" acctAlias="{esc(self.account.alias)}" model=""'
        self.sub_head = self.head.replace(
            f'accountId="{account_id}"', f'accountId="{account_id}{SUB_ACCOUNT_SUFFIX}"', 1
        )
        inception = world.inception
        self.prev_date = world.previous_business_day(from_date)
        self.all_dates = [self.prev_date, *world.business_days(from_date, to_date)]
        self.states: list[AccountDay | None] = [
            world.day(account_id, d) if d >= inception else None for d in self.all_dates
        ]
        self.prev = self.states[0]
        self.window = [s for s in self.states[1:] if s is not None]
        self.last = self.window[-1] if self.window else self.prev

    def render(self) -> list[str]:
        a, f = self.account, self.fmt
        parts = [
            f'<FlexStatement accountId="{a.account_id}" fromDate="{f.d(self.from_date)}"'
            f' toDate="{f.d(self.to_date)}" period="{esc(self.period)}"'
            f' whenGenerated="{self.generated}">\n',
            self.account_information(),
            _section("EquitySummaryInBase", self.equity_summary()),
            self.change_in_nav(),
            _section("CashReport", self.cash_report()),
            self._optional("OpenPositions", self.open_positions),
            *(_section(name, ()) for name in _EMPTY_BEFORE_TRADES),
            _section("Trades", self.trades()),
            _section("TransactionTaxes", ()),
            self._life_section("UnbundledCommissionDetails", self.unbundled_commissions),
            _section("OptionEAE", self.option_eae()),
            _section("PendingExcercises", ()),
            self._optional("PriorPeriodPositions", self.prior_period_positions),
            _section("CorporateActions", self.corporate_actions()),
            _section("CashTransactions", self.cash_transactions()),
            _section("InterestAccruals", self.interest_accruals()),
            self._life_section("ChangeInDividendAccruals", self.dividend_accrual_changes),
            self._life_section("OpenDividendAccruals", self.open_dividend_accruals),
            _section("Transfers", self.transfers()),
            self._life_section("FIFOPerformanceSummaryInBase", self.fifo_performance),
            _section("ConversionRates", self.conversion_rates()),
            "</FlexStatement>\n",
        ]
        return parts

    def _life_section(self, name: str, rows: Any) -> str:
        """Section ``name`` of a world with position events ("" otherwise: the query of a
        default world does not select it, so its statements stay as they were)."""
        return _section(name, rows()) if self.world.position_events else ""

    def _optional(self, name: str, rows: Any) -> str:
        """Section ``name`` unless the quirks omit it ("" then)."""
        return "" if name in self.quirks.omit_sections else _section(name, rows())

    # ---------------------------------------------------------------------------------------------

    def account_information(self) -> str:
        a, f = self.account, self.fmt
        traded = [s.date for s in self.window if s.trades]
        return (
            f'<AccountInformation {self.head} currency="{a.base_currency}" name="{esc(a.name)}"'
            f' accountType="{esc(a.account_type)}" customerType="{esc(a.customer_type)}"'
            ' accountCapabilities="Margin" tradingPermissions="Stocks,Options,Futures,Bonds,Forex"'
            f' accountRepName="" accountRepPhone="" dateOpened="{f.d(a.opened)}"'
            f' dateFunded="{f.d(self.world.inception)}" dateClosed=""'
            f' lastTradedDate="{f.d(traded[-1]) if traded else ""}" street="" street2="" city=""'
            ' state="" country="" postalCode="" streetResidentialAddress=""'
            ' street2ResidentialAddress="" cityResidentialAddress="" stateResidentialAddress=""'
            ' countryResidentialAddress="" postalCodeResidentialAddress=""'
            f' masterName="{a.master_id or ""}" ibEntity="IB-LLC" primaryEmail="" />\n'
        )

    def equity_summary(self) -> Iterable[str]:
        zero_fields = {
            name: f' {name}="0" {name}Long="0" {name}Short="0"' for name in _EQUITY_FIELDS
        }
        for d, state in zip(self.all_dates, self.states, strict=True):
            values: dict[str, tuple[Decimal, Decimal]] = {}
            if state is not None:
                n = state.nav
                cash = (n.cash_long_base, n.cash_short_base)
                values = {
                    "cash": cash,
                    "brokerCashComponent": cash,
                    "stock": (n.stock_long_base, n.stock_short_base),
                    "options": (n.options_long_base, n.options_short_base),
                    "bonds": (n.bonds_long_base, n.bonds_short_base),
                    "total": (n.total_long_base, n.total_short_base),
                }
                if n.dividend_accruals_base:
                    acc = n.dividend_accruals_base
                    values["dividendAccruals"] = (max(acc, ZERO), min(acc, ZERO))
                if n.interest_accruals_base:
                    acc = n.interest_accruals_base
                    pair = (max(acc, ZERO), min(acc, ZERO))
                    values["interestAccruals"] = values["brokerInterestAccrualsComponent"] = pair
            attrs = []
            for name in _EQUITY_FIELDS:
                pair = values.get(name)
                if pair is None:
                    attrs.append(zero_fields[name])
                else:
                    lo, sh = pair
                    attrs.append(
                        f' {name}="{num(lo + sh)}" {name}Long="{num(lo)}" {name}Short="{num(sh)}"'
                    )
            yield (
                f'<EquitySummaryByReportDateInBase {self.head} currency="{self.base}"'
                f' reportDate="{self.fmt.d(d)}"{"".join(attrs)} />\n'
            )

    def change_in_nav(self) -> str:
        starting = self.prev.nav.total_base if self.prev else ZERO
        ending = self.last.nav.total_base if self.last else ZERO
        v: dict[str, Decimal] = defaultdict(Decimal)
        growth = Decimal(1)
        for state in self.window:
            growth *= 1 + state.daily_return
            for txn in state.cash_transactions:
                v[_CNAV_TYPE_FIELD[txn.type]] += txn.amount * txn.fx_rate_to_base
            for trade in state.trades:
                v["commissions"] += trade.commission * _commission_rate(trade, state)
            for event in state.position_events:
                if event.kind == "Transfer":
                    currency = self.world.instruments[event.conid].currency
                    v["assetTransfers"] += event.value * state.fx_to_base[currency]
        start_acc = self.prev.nav.interest_accruals_base if self.prev else ZERO
        end_acc = self.last.nav.interest_accruals_base if self.last else ZERO
        if start_acc or end_acc:
            v["changeInInterestAccruals"] = end_acc - start_acc
        start_div = self.prev.nav.dividend_accruals_base if self.prev else ZERO
        end_div = self.last.nav.dividend_accruals_base if self.last else ZERO
        if start_div or end_div:
            v["changeInDividendAccruals"] = end_div - start_div
        flows = sum(v.values(), ZERO)
        v["startingValue"] = starting
        v["endingValue"] = ending
        v["mtm"] = ending - starting - flows
        v["twr"] = ((growth - 1) * 100).quantize(_TWR_PLACES)
        attrs = "".join(f' {name}="{num(v.get(name, ZERO))}"' for name in _CNAV_FIELDS)
        f = self.fmt
        return (
            f'<ChangeInNAV {self.head} currency="{self.base}" fromDate="{f.d(self.from_date)}"'
            f' toDate="{f.d(self.to_date)}"{attrs} />\n'
        )

    def _cash_flows(self) -> tuple[dict[str, dict[str, Decimal]], dict[str, Decimal]]:
        """Per-currency local cash flows by CashReport field, and the same converted to base."""
        local: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
        base: dict[str, Decimal] = defaultdict(Decimal)

        def add(ccy: str, field: str, amount: Decimal, rate: Decimal) -> None:
            if field == "depositWithdrawals":
                field = "deposits" if amount > 0 else "withdrawals"
            elif field in ("netTrades",):
                field = "netTradesSales" if amount > 0 else "netTradesPurchases"
            local[ccy][field] += amount
            base[field] += amount * rate

        for state in self.window:
            fx = state.fx_to_base
            for txn in state.cash_transactions:
                add(txn.currency, _CASH_TYPE_FIELD[txn.type], txn.amount, fx[txn.currency])
            for t in state.trades:
                add(t.commission_currency, "commissions", t.commission, fx[t.commission_currency])
                if t.asset_category == "FUT":
                    add(t.currency, "cashSettlingMtm", t.net_cash - t.commission, fx[t.currency])
                elif t.asset_category == "CASH":
                    first = t.symbol.split(".")[0]
                    add(first, "netTrades", t.quantity, fx[first])
                    add(t.currency, "netTrades", t.proceeds, fx[t.currency])
                else:
                    add(t.currency, "netTrades", t.proceeds, fx[t.currency])
            for ccy, amount in state.variation.items():
                add(ccy, "cashSettlingMtm", amount, fx[ccy])
            for e in state.position_events:
                if e.proceeds:  # cash of a merger
                    ccy = self.world.instruments[e.conid].currency
                    add(ccy, "other", e.proceeds, fx[ccy])
        return local, base

    def cash_report(self) -> Iterable[str]:
        local, base = self._cash_flows()
        start = self.prev.cash if self.prev else {}
        end = self.last.cash if self.last else {}
        start_base = self.prev.nav.cash_base if self.prev else ZERO
        end_base = self.last.nav.cash_base if self.last else ZERO
        yield self._cash_row("BASE_SUMMARY", "BaseCurrency", start_base, end_base, base)
        for ccy in sorted(set(start) | set(end) | set(local)):
            yield self._cash_row(
                ccy, "Currency", start.get(ccy, ZERO), end.get(ccy, ZERO), local.get(ccy, {})
            )

    def _cash_row(self, ccy: str, level: str, start: Decimal, end: Decimal,
                  flows: dict[str, Decimal]) -> str:  # fmt: skip
        v = {name: flows.get(name, ZERO) for name in _CASH_FLOW_FIELDS}
        v["depositWithdrawals"] = v["deposits"] + v["withdrawals"]
        v["startingCash"] = start
        v["endingCash"] = v["endingSettledCash"] = v["slbNetCash"] = v["slbNetSettledCash"] = end
        v["fxTranslationGainLoss"] = (
            end - start - sum(flows.get(n, ZERO) for n in _CASH_FLOW_FIELDS)
        )
        attrs = []
        for name in _CASH_FIELDS:
            value = num(v.get(name, ZERO))
            attrs.append(f' {name}="{value}" {name}Sec="{value}" {name}Com="0"')
        f = self.fmt
        return (
            f'<CashReportCurrency {self.head} currency="{ccy}" levelOfDetail="{level}"'
            f' fromDate="{f.d(self.from_date)}" toDate="{f.d(self.to_date)}"{"".join(attrs)} />\n'
        )

    def open_positions(self) -> Iterable[str]:
        state = self.last
        if state is None:
            return
        f = self.fmt
        nav = state.nav.total_base
        for conid, pos in sorted(state.positions.items()):
            inst = self.world.instruments[conid]
            fx = state.fx_to_base[inst.currency]
            pct = (pos.position_value * fx * 100 / nav).quantize(_PCT_PLACES) if nav else ZERO
            yield self._position_row(inst, pos.quantity, pos.mark_price, pos.position_value,
                                     pos.cost_basis_money, fx, num(pct), "SUMMARY", "", state.date)  # fmt: skip
            for lot in pos.lots:
                value = inst.value(lot.quantity, pos.mark_price)
                yield self._position_row(inst, lot.quantity, pos.mark_price, value,
                                         lot.cost_basis_money, fx, "", "LOT",
                                         f.dt(lot.open_at), state.date)  # fmt: skip

    def _position_row(self, inst: Instrument, qty: Decimal, mark: Decimal, value: Decimal,
                      cost: Decimal, fx: Decimal, pct: str, level: str, opened: str,
                      d: date) -> str:  # fmt: skip
        unit = inst.value(qty, Decimal(1)) if inst.asset_category != "BOND" else qty / 100
        cost_price = num((cost / unit).quantize(_PRICE_PLACES))
        return (
            f'<OpenPosition {self.head} currency="{inst.currency}" fxRateToBase="{num(fx)}"'
            f'{self.blocks[inst.conid]} reportDate="{self.fmt.d(d)}" position="{num(qty)}"'
            f' markPrice="{num(mark)}" positionValue="{num(value)}" openPrice="{cost_price}"'
            f' costBasisPrice="{cost_price}" costBasisMoney="{num(cost)}" percentOfNAV="{pct}"'
            f' fifoPnlUnrealized="{num(value - cost)}" side="{"Long" if qty > 0 else "Short"}"'
            f' levelOfDetail="{level}" openDateTime="{opened}" holdingPeriodDateTime="{opened}"'
            ' vestingDate="" code="" originatingOrderID="" originatingTransactionID=""'
            ' accruedInt="" serialNumber="" deliveryType="" commodityType="" fineness="0.0"'
            ' weight="0.0" />\n'
        )

    def prior_period_positions(self) -> Iterable[str]:
        f = self.fmt
        previous = self.prev
        for state in self.window:
            if previous is not None:
                d = f.d(state.date)
                for conid, pos in sorted(previous.positions.items()):
                    inst = self.world.instruments[conid]
                    price = self.world.price(conid, state.date)
                    pnl = inst.value(pos.quantity, price) - pos.position_value
                    yield (
                        f'<PriorPeriodPosition {self.head} currency="{inst.currency}"'
                        f' fxRateToBase="{num(state.fx_to_base[inst.currency])}"'
                        f'{self.blocks[conid]} date="{d}" price="{num(price)}"'
                        f' priorMtmPnl="{num(pnl)}" />\n'
                    )
            previous = state

    def trades(self) -> Iterable[str]:
        for state in self.window:
            orders: dict[str, list[Trade]] = {}
            for trade in state.trades:
                orders.setdefault(trade.ib_order_id, []).append(trade)
            for fills in orders.values():
                yield self._order_row(fills)
                for trade in fills:
                    yield self._trade_row("Trade", "EXECUTION", trade, trade.quantity,
                                          trade.trade_price, trade.commission,
                                          trade.realized_pnl, trade.cost_basis)  # fmt: skip
                    yield from self._closed_lot_rows(trade)

    def _order_row(self, fills: list[Trade]) -> str:
        qty = sum((t.quantity for t in fills), ZERO)
        price = fills[0].trade_price
        if len(fills) > 1:
            price = (sum(t.quantity * t.trade_price for t in fills) / qty).quantize(_PRICE_PLACES)
        commission = sum((t.commission for t in fills), ZERO)
        realized = sum((t.realized_pnl for t in fills), ZERO)
        cost = sum((t.cost_basis for t in fills), ZERO)
        return self._trade_row("Order", "ORDER", fills[0], qty, price, commission, realized, cost,
                               fills=fills)  # fmt: skip

    def _closed_lot_rows(self, trade: Trade) -> Iterable[str]:
        """CLOSED_LOT rows: each consumed lot with its share of the trade's realized P&L."""
        for lot, pnl in _lot_pnls(trade):
            yield self._trade_row("Lot", "CLOSED_LOT", trade, -lot.quantity, lot.open_price,
                                  ZERO, pnl, -lot.cost_basis_money, lot_open=lot.open_at)  # fmt: skip

    def unbundled_commissions(self) -> Iterable[str]:
        """UnbundledCommissionDetails of a world with position events (its accounts are on IBKR's
        Tiered pricing): every execution's commission split into :func:`tiered_components`."""
        f = self.fmt
        for state in self.window:
            for t in state.trades:
                if t.conid is None or not t.commission:
                    continue
                inst = self.world.instruments[t.conid]
                parts = tiered_components(t, inst)
                attrs = "".join(f' {name}="{num(v)}"' for name, v in parts.items())
                yield (
                    f'<UnbundledCommissionDetail {self.head} currency="{t.commission_currency}"'
                    f' fxRateToBase="{num(t.fx_rate_to_base)}"{self.blocks[t.conid]}'
                    f' dateTime="{f.dt(t.executed_at)}" exchange="{inst.listing_exchange}"'
                    f' buySell="{t.buy_sell}" quantity="{num(t.quantity)}"'
                    f' price="{num(t.trade_price)}" tradeID="{t.trade_id}" orderReference=""'
                    f' totalCommission="{num(t.commission)}"{attrs} />\n'
                )

    def fifo_performance(self) -> Iterable[str]:
        """FIFOPerformanceSummaryInBase of a world with position events: per conid closed in the
        window, the closed lots' realized P&L in base split short/long term (held > 365 days),
        profits and losses apart; unrealized figures of the positions at the end."""
        realized: dict[int, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
        for state in self.window:
            for t in state.trades:
                for lot, pnl in _lot_pnls(t):
                    term = "LT" if (t.trade_date - lot.open_at.date()).days > 365 else "ST"
                    kind = "Profit" if pnl > 0 else "Loss"
                    realized[t.conid][f"realized{term}{kind}"] += pnl * t.fx_rate_to_base  # type: ignore[index]
        unrealized: dict[int, Decimal] = {}
        if self.last is not None:
            for conid, pos in self.last.positions.items():
                inst = self.world.instruments[conid]
                if inst.asset_category != "FUT":
                    fx = self.last.fx_to_base[inst.currency]
                    unrealized[conid] = (pos.position_value - pos.cost_basis_money) * fx
        f = self.fmt
        for conid in sorted(set(realized) | set(unrealized)):
            inst = self.world.instruments[conid]
            v = realized.get(conid, {})
            total = sum(v.values(), ZERO)
            u = unrealized.get(conid, ZERO)
            figures = {
                "realizedSTProfit": v.get("realizedSTProfit", ZERO),
                "realizedSTLoss": v.get("realizedSTLoss", ZERO),
                "realizedLTProfit": v.get("realizedLTProfit", ZERO),
                "realizedLTLoss": v.get("realizedLTLoss", ZERO),
                "totalRealizedPnl": total,
                "unrealizedProfit": max(u, ZERO),
                "unrealizedLoss": min(u, ZERO),
                "totalUnrealizedPnl": u,
                "totalFifoPnl": total + u,
            }
            attrs = "".join(f' {name}="{num(x)}"' for name, x in figures.items())
            yield (
                f"<FIFOPerformanceSummaryUnderlying {self.head}{self.blocks[conid]}"
                f' reportDate="{f.d(self.to_date)}"{attrs} />\n'
            )

    def _trade_row(self, tag: str, level: str, t: Trade, qty: Decimal, price: Decimal,
                   commission: Decimal, realized: Decimal, cost: Decimal,
                   fills: Sequence[Trade] = (), lot_open: datetime | None = None) -> str:  # fmt: skip
        f = self.fmt
        inst = self.world.instruments[t.conid] if t.conid is not None else None
        block = self.blocks[t.conid] if inst else _fx_block(t.symbol)
        execution = level == "EXECUTION"
        money = qty * price if inst is None else inst.value(qty, price)
        if fills:
            proceeds = sum((x.proceeds for x in fills), ZERO)
            net_cash = sum((x.net_cash for x in fills), ZERO)
            mtm = sum((self._mtm(x) for x in fills), ZERO)
        elif execution:
            proceeds, net_cash, mtm = t.proceeds, t.net_cash, self._mtm(t)
        else:  # a closed lot: cost and P&L only
            proceeds, net_cash, mtm = ZERO, ZERO, ZERO
        opened = f.dt(lot_open)
        q = self.quirks
        head = self.sub_head if t.asset_category in q.sub_account_categories else self.head
        if q.fx_net_cash_zero and inst is None:
            net_cash = ZERO
        return (
            f'<{tag} {head} currency="{t.currency}" fxRateToBase="{num(t.fx_rate_to_base)}"'
            f'{block} tradeID="{t.trade_id if execution else ""}" relatedTradeID=""'
            f' reportDate="{f.d(t.trade_date)}" dateTime="{f.dt(t.executed_at)}"'
            f' tradeDate="{f.d(t.trade_date)}"'
            f' settleDateTarget="{f.d(_settle_date(self.world, t, inst))}"'
            f' transactionType="{t.transaction_type}" exchange="{t.exchange}" quantity="{num(qty)}"'
            f' tradePrice="{num(price)}" tradeMoney="{num(money)}" proceeds="{num(proceeds)}"'
            f' taxes="0" ibCommission="{num(commission)}"'
            f' ibCommissionCurrency="{t.commission_currency}" netCash="{num(net_cash)}"'
            f' closePrice="{num(t.close_price)}" openCloseIndicator="{t.open_close}"'
            f' notes="{t.notes}"'
            f' cost="{num(cost)}" fifoPnlRealized="{num(realized)}" fxPnl="0"'
            f' mtmPnl="{num(mtm)}" origTradePrice="0" origTradeDate="" origTradeID=""'
            f' origOrderID="0" origTransactionID="0" buySell="{"BUY" if qty > 0 else "SELL"}"'
            f' clearingFirmID="" ibOrderID="{t.ib_order_id}"'
            f' transactionID="{t.transaction_id if execution else ""}"'
            f' ibExecID="{t.ib_exec_id if execution else ""}" relatedTransactionID="" rtn=""'
            ' brokerageOrderID="" orderReference="" volatilityOrderLink="" exchOrderId="N/A"'
            f' extExecID="" orderTime="{f.dt(t.executed_at)}" openDateTime="{opened}"'
            f' holdingPeriodDateTime="{opened}"'
            f' whenRealized="{f.dt(t.executed_at) if lot_open else ""}" whenReopened=""'
            f' levelOfDetail="{level}" changeInPrice="0" changeInQuantity="0" orderType="LMT"'
            ' traderID="" isAPIOrder="N" accruedInt="0" initialInvestment=""'
            ' positionActionID="" serialNumber="" deliveryType="" commodityType=""'
            ' fineness="0.0" weight="0.0" />\n'
        )

    def option_eae(self) -> Iterable[str]:
        """OptionEAE: one row per book trade of an option event (notes A/Ex/Ep), the option row
        typed Assignment/Exercise/Expiration and the stock leg Buy/Sell, as IBKR writes them
        beside the same trades in Trades (same tradeID)."""
        f = self.fmt
        for state in self.window:
            for t in state.trades:
                kind = _OPTION_EVENT_TYPES.get(t.notes)
                if kind is None or t.conid is None:
                    continue
                inst = self.world.instruments[t.conid]
                if inst.asset_category != "OPT":
                    kind = "Buy" if t.quantity > 0 else "Sell"
                yield (
                    f'<OptionEAE {self.head} currency="{t.currency}"'
                    f' fxRateToBase="{num(t.fx_rate_to_base)}"{self.blocks[t.conid]}'
                    f' date="{f.d(t.trade_date)}" transactionType="{kind}"'
                    f' quantity="{num(t.quantity)}" tradePrice="{num(t.trade_price)}"'
                    f' markPrice="{num(t.close_price)}" proceeds="{num(t.proceeds)}"'
                    f' commisionsAndTax="0" costBasis="{num(t.cost_basis)}"'
                    f' realizedPnl="{num(t.realized_pnl)}" fxPnl="0" mtmPnl="{num(self._mtm(t))}"'
                    f' tradeID="{t.trade_id}" serialNumber="" deliveryType="" commodityType=""'
                    ' fineness="0.0" weight="0.0" />\n'
                )

    def corporate_actions(self) -> Iterable[str]:
        """CorporateAction DETAIL rows of the world's actions, each repeated as a SUMMARY row
        with ``accountId="-"`` as IBKR writes them."""
        f = self.fmt
        for state in self.window:
            for e in state.position_events:
                if e.kind != "CorporateAction":
                    continue
                inst = self.world.instruments[e.conid]
                for head, when, txn, level in (
                    ('accountId="-" acctAlias="-" model=""', f.d(e.report_date), "", "SUMMARY"),
                    (self.head, f.dt(e.at), e.transaction_id, "DETAIL"),
                ):
                    yield (
                        f'<CorporateAction {head} currency="{inst.currency}"'
                        f' fxRateToBase="{num(state.fx_to_base[inst.currency])}"'
                        f'{self.blocks[e.conid]} reportDate="{f.d(e.report_date)}"'
                        f' dateTime="{when}" actionDescription="{esc(e.description)}"'
                        f' amount="{num(e.proceeds)}" proceeds="{num(e.proceeds)}"'
                        f' value="{num(e.value)}" quantity="{num(e.quantity)}"'
                        ' costBasis="" fifoPnlRealized="0" mtmPnl="0" code=""'
                        f' type="{e.type}" transactionID="{txn}" actionID="{e.action_id}"'
                        f' levelOfDetail="{level}" serialNumber="" deliveryType=""'
                        ' commodityType="" fineness="0.0" weight="0.0" />\n'
                    )

    def dividend_accrual_changes(self) -> Iterable[str]:
        """ChangeInDividendAccrual rows: the posting (code Po, amounts +) on the ex-date and the
        reversal (code Re, amounts -) on the pay date, tax with the sign of the gross."""
        for state in self.window:
            for code, acc in state.dividend_accrual_changes:
                sign = 1 if code == "Po" else -1
                yield self._dividend_row(
                    "ChangeInDividendAccrual", acc, state, code, sign,
                    f' reportDate="{self.fmt.d(state.date)}" date="{self.fmt.d(state.date)}"',
                )  # fmt: skip

    def open_dividend_accruals(self) -> Iterable[str]:
        """OpenDividendAccrual rows: the accruals open at the window's end."""
        if self.last is not None:
            for acc in self.last.dividend_accruals:
                yield self._dividend_row("OpenDividendAccrual", acc, self.last, "", 1, "")

    def _dividend_row(self, tag: str, acc: DividendAccrual, state: AccountDay, code: str, sign: int,
                      dates: str) -> str:  # fmt: skip
        f = self.fmt
        return (
            f'<{tag} {self.head} currency="{acc.currency}"'
            f' fxRateToBase="{num(state.fx_to_base[acc.currency])}"{self.blocks[acc.conid]}'
            f'{dates} exDate="{f.d(acc.ex_date)}" payDate="{f.d(acc.pay_date)}"'
            f' quantity="{num(acc.quantity)}" tax="{num(sign * acc.tax)}" fee="0"'
            f' grossRate="{num(acc.gross_rate)}" grossAmount="{num(sign * acc.gross)}"'
            f' netAmount="{num(sign * acc.net)}" code="{code}" fromAcct="" toAcct=""'
            f' actionID="{acc.action_id}" levelOfDetail="DETAIL" />\n'
        )

    def interest_accruals(self) -> Iterable[str]:
        """InterestAccrualsCurrency rows of the window, per currency (local) and BASE_SUMMARY
        (base), as IBKR writes them: ending = starting + accrued + reversal (+ fxTranslation in
        base), the reversal being minus the interest posted to cash."""
        start = self.prev.interest_accrued if self.prev else {}
        end = self.last.interest_accrued if self.last else {}
        accrued: dict[str, Decimal] = defaultdict(Decimal)
        reversal: dict[str, Decimal] = defaultdict(Decimal)
        accrued_base = reversal_base = ZERO
        before = dict(start)
        for state in self.window:
            for txn in state.cash_transactions:
                if txn.type.startswith("Broker Interest") and self.world.position_events:
                    reversal[txn.currency] -= txn.amount
                    reversal_base -= txn.amount * state.fx_to_base[txn.currency]
                    before[txn.currency] = before.get(txn.currency, ZERO) - txn.amount
            for ccy in set(before) | set(state.interest_accrued):
                today = state.interest_accrued.get(ccy, ZERO) - before.get(ccy, ZERO)
                accrued[ccy] += today
                accrued_base += today * state.fx_to_base[ccy]
            before = dict(state.interest_accrued)
        currencies = sorted(set(start) | set(end) | set(accrued) | set(reversal))
        if not currencies:
            return
        start_base = self.prev.nav.interest_accruals_base if self.prev else ZERO
        end_base = self.last.nav.interest_accruals_base if self.last else ZERO
        f = self.fmt
        rows = [("BASE_SUMMARY", start_base, accrued_base, reversal_base, end_base)] + [
            (c, start.get(c, ZERO), accrued[c], reversal[c], end.get(c, ZERO)) for c in currencies
        ]
        for ccy, first, acc, rev, last in rows:
            fx = last - first - acc - rev
            yield (
                f'<InterestAccrualsCurrency {self.head} currency="{ccy}"'
                f' fromDate="{f.d(self.from_date)}" toDate="{f.d(self.to_date)}"'
                f' startingAccrualBalance="{num(first)}" interestAccrued="{num(acc)}"'
                f' accrualReversal="{num(rev)}" fxTranslation="{num(fx)}"'
                f' endingAccrualBalance="{num(last)}" />\n'
            )

    def transfers(self) -> Iterable[str]:
        """Transfer rows of positions moved in or out (ACATS)."""
        f = self.fmt
        for state in self.window:
            for e in state.position_events:
                if e.kind != "Transfer":
                    continue
                inst = self.world.instruments[e.conid]
                fx = state.fx_to_base[inst.currency]
                yield (
                    f'<Transfer {self.head} currency="{inst.currency}" fxRateToBase="{num(fx)}"'
                    f'{self.blocks[e.conid]} reportDate="{f.d(e.report_date)}"'
                    f' date="{f.d(e.report_date)}" dateTime="{f.dt(e.at)}"'
                    f' settleDate="{f.d(e.report_date)}" type="{e.type}"'
                    f' direction="{e.direction}" company="OTHER BROKER" account="XXXX1234"'
                    f' accountName="" deliveringBroker="" quantity="{num(e.quantity)}"'
                    f' transferPrice="{num(e.price)}" positionAmount="{num(e.value)}"'
                    f' positionAmountInBase="{num(e.value * fx)}" pnlAmount="0"'
                    ' pnlAmountInBase="0" fxPnl="0" cashTransfer="0" code=""'
                    f' clientReference="" transactionID="{e.transaction_id}"'
                    ' levelOfDetail="DETAIL" serialNumber="" deliveryType="" commodityType=""'
                    ' fineness="0.0" weight="0.0" />\n'
                )

    def _mtm(self, t: Trade) -> Decimal:
        """Mark-to-market of an execution to the day's close (local currency)."""
        if t.conid is None:
            return ZERO
        inst = self.world.instruments[t.conid]
        return inst.value(t.quantity, t.close_price) - inst.value(t.quantity, t.trade_price)

    def cash_transactions(self) -> Iterable[str]:
        f = self.fmt
        details: dict[tuple[str, str], list[tuple[AccountDay, Any]]] = {}
        for state in self.window:
            for txn in state.cash_transactions:
                details.setdefault((txn.type, txn.currency), []).append((state, txn))
        for rows in details.values():
            summary: dict[tuple[date, int | None, str], list[Any]] = {}
            for _, txn in rows:
                yield self._cash_txn_row(txn, self.head, f.dt(txn.at), txn.amount,
                                         txn.transaction_id, "DETAIL")  # fmt: skip
                key = (txn.report_date, txn.conid, txn.description)
                summary.setdefault(key, []).append(txn)
            for (report_date, _, _), txns in summary.items():
                amount = sum((t.amount for t in txns), ZERO)
                yield self._cash_txn_row(txns[0], 'accountId="-" acctAlias="-" model=""',
                                         f.d(report_date), amount, "", "SUMMARY")  # fmt: skip

    def _cash_txn_row(self, txn: Any, head: str, when: str, amount: Decimal, txn_id: str,
                      level: str) -> str:  # fmt: skip
        if txn.conid is None:
            block = _NO_INSTRUMENT.format(esc(txn.description))
        else:
            before, after = self.described[txn.conid]
            block = f"{before}{esc(txn.description)}{after}"
        d = self.fmt.d(txn.report_date)
        return (
            f'<CashTransaction {head} currency="{txn.currency}"'
            f' fxRateToBase="{num(txn.fx_rate_to_base)}"{block} dateTime="{when}"'
            f' settleDate="{d}" availableForTradingDate="" amount="{num(amount)}"'
            f' type="{esc(txn.type)}" tradeID="" code="" transactionID="{txn_id}"'
            f' reportDate="{d}" exDate="" clientReference="" actionID=""'
            f' levelOfDetail="{level}" serialNumber="" deliveryType="" commodityType=""'
            ' fineness="0.0" weight="0.0" />\n'
        )

    def conversion_rates(self) -> Iterable[str]:
        for state in self.window:
            d = self.fmt.d(state.date)
            for ccy, rate in sorted(state.fx_to_base.items()):
                yield (
                    f'<ConversionRate reportDate="{d}" fromCurrency="{ccy}"'
                    f' toCurrency="{self.base}" rate="{num(rate)}" />\n'
                )


def _commission_rate(trade: Trade, state: AccountDay) -> Decimal:
    """The base rate of the trade's commission currency (the trade's own rate when the same)."""
    if trade.commission_currency == trade.currency:
        return trade.fx_rate_to_base
    return state.fx_to_base[trade.commission_currency]


def render_statement(
    world: World,
    account_ids: Sequence[str],
    from_date: date,
    to_date: date,
    *,
    date_format: str = "yyyyMMdd",
    period: str = "",
    query_name: str = "ibpipeline",
    when_generated: datetime | None = None,
    quirks: StatementQuirks | None = None,
) -> bytes:
    """An Activity Flex ``FlexQueryResponse`` (UTF-8 bytes) for ``account_ids`` over
    [``from_date``, ``to_date``] (report dates, inclusive).

    ``date_format`` is one of :data:`DATE_FORMATS` (times ``HHmmss`` for ``yyyyMMdd``, else
    ``HH:mm:ss``); ``when_generated`` (UTC, default now) is written in New York time; ``quirks``
    (default none) selects the real-statement quirks of :class:`StatementQuirks`.
    Raises ValueError for an empty account list, ``from_date > to_date`` or an unknown format,
    KeyError for an unknown account.
    """
    if not account_ids:
        raise ValueError("render_statement needs at least one account id")
    if from_date > to_date:
        raise ValueError(f"from_date {from_date} is after to_date {to_date}")
    quirks = quirks or NO_QUIRKS
    fmt = _Fmt(date_format, quirks)
    generated = fmt.dt(when_generated or datetime.now(UTC))
    count = len(account_ids) if quirks.statements_count is None else quirks.statements_count
    blocks = {conid: _instrument_block(inst, fmt) for conid, inst in world.instruments.items()}
    parts = [
        f'<FlexQueryResponse queryName="{esc(query_name)}" type="AF">\n'
        f'<FlexStatements count="{count}">\n'
    ]
    for account_id in account_ids:
        statement = _Statement(
            world, account_id, from_date, to_date, fmt, period, generated, blocks, quirks
        )
        parts.extend(statement.render())
    parts.append("</FlexStatements>\n</FlexQueryResponse>\n")
    return "".join(parts).encode()
