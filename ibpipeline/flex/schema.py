"""Normalized Flex tables: one :class:`TableSpec` per table, the contract of ``docs/architecture.md``.

Each spec names the Flex section and row elements it reads, and maps Flex attribute -> column ->
kind, so :mod:`ibpipeline.flex.parse` is table-driven. Kinds and their Arrow types:

- ``str``: ``string``; ``""``, ``-``, ``--``, ``N/A`` and ``MULTI`` are null.
- ``dec``: ``decimal128(38, 10)``, parsed exactly from the text (money, quantities, prices, rates).
  A value with more than 10 decimal places is never rounded: it becomes null, like any value that
  does not convert (its raw text goes to ``extra`` under the Flex attribute name and the parse
  reports it in ``ParsedFlex.problems``).
- ``int``: ``int64`` (``conid`` only; IBKR identifiers such as ``transactionID`` stay strings).
- ``date``: ``date32`` report/trade/settle dates in the statement's date format.
- ``ts``: ``timestamp[us, tz=UTC]``, from IBKR's local date-times (America/New_York).
- ``day``: ``date32``, the date part of a date or date-time attribute as IBKR writes it (its local
  date; a time and zone after the date are dropped), for attributes IBKR fills with either.

Every table starts with ``account_id`` and ``date`` (report date, ``date32``) and ends with
``statement_sha256`` and ``extra`` (``map<string, string>``: the non-empty attributes of the row
that are unknown, i.e. neither a column nor in :data:`KNOWN_ATTRIBUTES`, so attributes IBKR adds
later are kept; documented attributes without a column stay only in the raw XML). Field metadata
carries the Flex attribute (``flex``), the unit (``unit``) and a description (``doc``).

Currency conventions: ``*_base`` columns are in the account's base currency; other money columns
are in the row's ``currency``; ``fx_rate_to_base`` is base units per one unit of ``currency``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import pyarrow as pa

DECIMAL = pa.decimal128(38, 10)
TIMESTAMP = pa.timestamp("us", tz="UTC")
KIND_TYPES: dict[str, pa.DataType] = {
    "str": pa.string(),
    "dec": DECIMAL,
    "int": pa.int64(),
    "date": pa.date32(),
    "ts": TIMESTAMP,
    "day": pa.date32(),
}
EXTRA_TYPE = pa.map_(pa.string(), pa.string())
ACCOUNT_ID_SAFE = r"^[A-Za-z0-9][A-Za-z0-9_.*-]{0,63}$"
"""Account ids the pipeline accepts (RE2 and ``re`` syntax), together with "no ``..``": safe in a
file path, an SQL string literal and a Dagster partition key. Any IBKR form (``U1234567``,
``DU1234567``, ``U1234567F``, placeholders such as ``XXXXXUSD`` or ``U***4321``) fits."""
NULL_TOKENS: tuple[str, ...] = ("", "-", "--", "N/A", "MULTI")


@dataclass(frozen=True)
class Column:
    """One column: ``flex`` attribute (or None when derived), ``kind`` (see module doc), docs.

    Columns whose name starts with ``_`` are read for deriving ``date`` but not stored.
    ``alt``: other spellings of the attribute, read when the row has no ``flex`` attribute (IBKR
    writes ``tradeId`` in TransactionTax but ``tradeID`` elsewhere). ``by_tag``: ``(row tag,
    attribute or None)`` pairs for tables whose row kinds name the column differently (``fees``);
    a tag not listed reads ``flex``. ``tag_value``: ``(row tag, value)`` pairs: the value of the
    column for rows of that tag when the attribute is missing or empty (a column with no ``flex``
    holds it always, e.g. ``fees.fee_source``).
    """

    name: str
    kind: str
    flex: str | None
    doc: str = ""
    unit: str = ""
    alt: tuple[str, ...] = ()
    by_tag: tuple[tuple[str, str | None], ...] = ()
    tag_value: tuple[tuple[str, str], ...] = ()

    @property
    def hidden(self) -> bool:
        return self.name.startswith("_")

    def attribute(self, tag: str) -> str | None:
        """The Flex attribute this column reads from a ``tag`` row."""
        return dict(self.by_tag).get(tag, self.flex)

    @property
    def attributes(self) -> tuple[str, ...]:
        """Every attribute name this column reads (any tag, any spelling)."""
        names = (self.flex, *self.alt, *(a for _, a in self.by_tag))
        return tuple(dict.fromkeys(a for a in names if a))

    @property
    def flex_label(self) -> str:
        """The ``flex`` field metadata: the attribute, with its other spellings and per-tag names."""
        if not self.by_tag:
            return " or ".join(a for a in (self.flex, *self.alt) if a)
        parts = [f"{a} ({t})" for t, a in self.by_tag if a]
        if self.flex:
            parts.append(f"{self.flex} (other rows)")
        return "; ".join(parts)

    def field(self) -> pa.Field:
        meta = {"doc": self.doc, "unit": self.unit, "flex": self.flex_label}
        return pa.field(
            self.name, KIND_TYPES[self.kind], metadata={k: v for k, v in meta.items() if v}
        )


@dataclass(frozen=True)
class TableSpec:
    """A normalized table read from one or more Flex sections.

    ``sections``: container elements directly under ``FlexStatement`` whose children are the rows
    (several for ``dividend_accruals`` and ``fees``), or empty when ``row_tags`` are single
    elements directly under ``FlexStatement``.
    ``row_tags``: row element -> default ``level_of_detail`` when the attribute is missing.
    ``date_from``: columns coalesced (in order, then the statement's ``toDate``) into ``date``.
    """

    name: str
    sections: tuple[str, ...]
    row_tags: MappingProxyType
    columns: tuple[Column, ...]
    date_from: tuple[str, ...]
    key: tuple[str, ...]
    doc: str

    @property
    def section(self) -> str | None:
        """The section(s) as written in messages (None for single elements)."""
        return "/".join(self.sections) or None

    @property
    def schema(self) -> pa.Schema:
        fields = [ACCOUNT_ID.field(), DATE_FIELD]
        fields += [c.field() for c in self.columns if not c.hidden and c.name != "account_id"]
        fields += [SHA_FIELD, EXTRA_FIELD]
        return pa.schema(fields, metadata={"doc": self.doc, "key": ",".join(self.key)})


ACCOUNT_ID = Column(
    "account_id",
    "str",
    "accountId",
    "IBKR account id; '-' on SUMMARY rows is replaced by the statement's account",
)
DATE_FIELD = pa.field(
    "date", pa.date32(), metadata={"doc": "report date of the row (account's business day)"}
)
SHA_FIELD = pa.field(
    "statement_sha256", pa.string(), metadata={"doc": "sha256 of the raw statement bytes"}
)
EXTRA_FIELD = pa.field("extra", EXTRA_TYPE, metadata={"doc": "unknown non-empty Flex attributes"})


def _s(name: str, flex: str, doc: str = "") -> Column:
    return Column(name, "str", flex, doc)


def _money(name: str, flex: str, doc: str = "") -> Column:
    return Column(name, "dec", flex, doc, "money in the row's currency")


def _base(name: str, flex: str, doc: str = "") -> Column:
    return Column(name, "dec", flex, doc, "money in base currency")


def _d(name: str, flex: str, doc: str = "") -> Column:
    return Column(name, "date", flex, doc)


def _ts(name: str, flex: str, doc: str = "") -> Column:
    return Column(name, "ts", flex, doc, "UTC instant (IBKR writes America/New_York local time)")


CONID = Column("conid", "int", "conid", "IBKR contract id")
LEVEL = _s("level_of_detail", "levelOfDetail", "row kind; never sum rows of different kinds")
CURRENCY = _s("currency", "currency", "ISO currency of the row's money columns")
FX_TO_BASE = Column("fx_rate_to_base", "dec", "fxRateToBase", "rate to base", "base per 1 currency")
MULTIPLIER = Column("multiplier", "dec", "multiplier", "contract multiplier", "units per contract")
QUANTITY = Column(
    "quantity", "dec", "quantity", "signed; sells/shorts negative", "shares/contracts/face"
)
_REPORT_DATE = _d("_report_date", "reportDate")

INSTRUMENT: tuple[Column, ...] = (
    _s("symbol", "symbol"),
    _s("description", "description"),
    _s("asset_category", "assetCategory", "STK, OPT, FUT, BOND, CASH, ... (unknown values kept)"),
    _s("sub_category", "subCategory"),
    CURRENCY,
    MULTIPLIER,
    Column("strike", "dec", "strike", "option strike", "price in currency"),
    _d("expiry", "expiry", "derivative expiry date"),
    _s("put_call", "putCall", "C or P"),
    _s("underlying_symbol", "underlyingSymbol"),
    _s("isin", "isin"),
)


def _spec(
    name: str,
    section: str | tuple[str, ...] | None,
    row_tags: dict[str, str | None],
    columns: tuple[Column, ...],
    date_from: tuple[str, ...],
    key: tuple[str, ...],
    doc: str,
) -> TableSpec:
    sections = (section,) if isinstance(section, str) else section or ()
    return TableSpec(
        name, sections, MappingProxyType(row_tags), (ACCOUNT_ID, *columns), date_from, key, doc
    )


ACCOUNT_INFO = _spec(
    "account_info",
    None,
    {"AccountInformation": None},
    (
        _s("acct_alias", "acctAlias"),
        _s("name", "name"),
        _s("base_currency", "currency", "the account's base currency"),
        _s("account_type", "accountType"),
        _s("customer_type", "customerType"),
        _s("master_name", "masterName"),
        _d("date_opened", "dateOpened"),
        _d("date_funded", "dateFunded"),
        _d("date_closed", "dateClosed"),
    ),
    (),
    ("account_id", "date"),
    "AccountInformation, one row per account per calendar day fromDate..toDate of the statement.",
)

NAV_DAILY = _spec(
    "nav_daily",
    "EquitySummaryInBase",
    {"EquitySummaryByReportDateInBase": None},
    (
        _REPORT_DATE,
        _s("base_currency", "currency", "base currency (statement's when the row has none)"),
        _base("cash_base", "cash"),
        _base("stock_base", "stock"),
        _base("options_base", "options"),
        _base("bonds_base", "bonds"),
        _base("commodities_base", "commodities"),
        _base("funds_base", "funds"),
        _base("notes_base", "notes"),
        _base("crypto_base", "crypto"),
        _base("dividend_accruals_base", "dividendAccruals"),
        _base("interest_accruals_base", "interestAccruals"),
        _base("total_base", "total", "NAV"),
        _base("total_long_base", "totalLong"),
        _base("total_short_base", "totalShort"),
    ),
    ("_report_date",),
    ("account_id", "date"),
    "EquitySummaryByReportDateInBase: NAV components per report date (incl. the day before fromDate).",
)

CHANGE_IN_NAV = _spec(
    "change_in_nav",
    None,
    {"ChangeInNAV": None},
    (
        _d("from_date", "fromDate"),
        _d("to_date", "toDate"),
        _s("base_currency", "currency", "base currency (statement's when the row has none)"),
        _base("starting_value_base", "startingValue"),
        _base("mtm_base", "mtm"),
        _base("realized_base", "realized"),
        _base("change_in_unrealized_base", "changeInUnrealized"),
        _base("deposits_withdrawals_base", "depositsWithdrawals"),
        _base("internal_cash_transfers_base", "internalCashTransfers"),
        _base("asset_transfers_base", "assetTransfers"),
        _base("dividends_base", "dividends"),
        _base("withholding_tax_base", "withholdingTax"),
        _base("interest_base", "interest"),
        _base("commissions_base", "commissions"),
        _base("other_fees_base", "otherFees"),
        _base("fx_translation_base", "fxTranslation"),
        _base("other_base", "other"),
        _base("ending_value_base", "endingValue"),
        Column(
            "twr_pct", "dec", "twr", "time-weighted return of the window", "percent (0.05 = 0.05 %)"
        ),
    ),
    ("to_date",),
    ("account_id", "from_date", "to_date"),
    "ChangeInNAV: one row per statement window; date = to_date.",
)

CASH_BALANCES = _spec(
    "cash_balances",
    "CashReport",
    {"CashReportCurrency": None},
    (
        _s("currency", "currency", "ISO currency, or BASE_SUMMARY (the base-currency total)"),
        _s(
            "level_of_detail",
            "levelOfDetail",
            "Currency per currency, BaseCurrency for BASE_SUMMARY",
        ),
        _d("from_date", "fromDate"),
        _d("to_date", "toDate"),
        _money("starting_cash", "startingCash"),
        _money(
            "deposits",
            "deposits",
            "deposits of the window (>= 0); when the row has only depositWithdrawals: that net "
            "amount if >= 0, else 0",
        ),
        _money(
            "withdrawals",
            "withdrawals",
            "withdrawals of the window (<= 0); when the row has only depositWithdrawals: that net "
            "amount if < 0, else 0",
        ),
        _money("deposits_withdrawals", "depositWithdrawals", "net deposits and withdrawals"),
        _money("dividends", "dividends"),
        _money("broker_interest", "brokerInterest"),
        _money("withholding_tax", "withholdingTax"),
        _money("commissions", "commissions"),
        _money("other_fees", "otherFees"),
        _money("net_trades_sales", "netTradesSales"),
        _money("net_trades_purchases", "netTradesPurchases"),
        _money("fx_translation_gain_loss", "fxTranslationGainLoss"),
        _money("ending_cash", "endingCash"),
        _money("ending_settled_cash", "endingSettledCash"),
    ),
    ("to_date",),
    ("account_id", "date", "currency", "level_of_detail"),
    "CashReportCurrency over the window; date = to_date. BASE_SUMMARY money is in base currency.",
)

_POSITION_COLUMNS: tuple[Column, ...] = (
    CONID,
    *INSTRUMENT,
    FX_TO_BASE,
)

OPEN_POSITIONS = _spec(
    "open_positions",
    "OpenPositions",
    {"OpenPosition": "SUMMARY"},
    (
        _REPORT_DATE,
        *_POSITION_COLUMNS,
        _s("level_of_detail", "levelOfDetail", "SUMMARY (one per conid) or LOT (one per open lot)"),
        _ts("lot_open_at", "openDateTime", "LOT rows: when the lot was opened"),
        Column("quantity", "dec", "position", "signed; shorts negative", "shares/contracts/face"),
        Column(
            "mark_price", "dec", "markPrice", "closing price", "price in currency (BOND: % of face)"
        ),
        _money(
            "position_value", "positionValue", "quantity x mark x multiplier (notional for FUT)"
        ),
        Column("open_price", "dec", "openPrice", "", "price in currency"),
        Column("cost_basis_price", "dec", "costBasisPrice", "", "price in currency"),
        _money("cost_basis_money", "costBasisMoney"),
        _money("unrealized_pnl", "fifoPnlUnrealized", "FIFO unrealized P/L"),
        Column("percent_of_nav", "dec", "percentOfNAV", "", "percent"),
        _money("accrued_interest", "accruedInt"),
        _s("side", "side", "Long or Short"),
        _s("code", "code"),
    ),
    ("_report_date",),
    ("account_id", "date", "conid", "level_of_detail", "lot_open_at"),
    "OpenPosition rows as IBKR writes them at the statement's toDate (SUMMARY and LOT rows).",
)

PRIOR_PERIOD_POSITIONS = _spec(
    "prior_period_positions",
    "PriorPeriodPositions",
    {"PriorPeriodPosition": None},
    (
        _d("_date", "date"),
        *_POSITION_COLUMNS,
        Column("price", "dec", "price", "close on date", "price in currency (BOND: % of face)"),
        _money("prior_mtm_pnl", "priorMtmPnl", "MTM P/L of the prior position on date"),
    ),
    ("_date",),
    ("account_id", "date", "conid"),
    "PriorPeriodPosition: positions held at the previous close, priced at the close of date.",
)

TRADES = _spec(
    "trades",
    "Trades",
    {
        "Trade": "EXECUTION",
        "Order": "ORDER",
        "Lot": "CLOSED_LOT",
        "SymbolSummary": "SYMBOL_SUMMARY",
        "AssetSummary": "ASSET_SUMMARY",
    },
    (
        _REPORT_DATE,
        _s("level_of_detail", "levelOfDetail", "EXECUTION, ORDER, CLOSED_LOT, SYMBOL_SUMMARY, ..."),
        _s("trade_id", "tradeID"),
        _s("transaction_id", "transactionID"),
        _s("ib_order_id", "ibOrderID"),
        _s("ib_exec_id", "ibExecID"),
        CONID,
        *INSTRUMENT,
        FX_TO_BASE,
        _d("trade_date", "tradeDate"),
        _ts("executed_at", "dateTime"),
        _ts("lot_open_at", "openDateTime", "CLOSED_LOT rows: when the closed lot was opened"),
        _d("settle_date", "settleDateTarget"),
        _s("transaction_type", "transactionType", "ExchTrade, BookTrade, TradeCancel, ..."),
        _s("exchange", "exchange"),
        _s("buy_sell", "buySell"),
        _s("open_close", "openCloseIndicator"),
        _s("order_type", "orderType"),
        QUANTITY,
        Column("trade_price", "dec", "tradePrice", "", "price in currency"),
        _money("trade_money", "tradeMoney"),
        _money("proceeds", "proceeds"),
        _money("taxes", "taxes"),
        Column("commission", "dec", "ibCommission", "", "money in commission_currency"),
        _s("commission_currency", "ibCommissionCurrency"),
        _money("net_cash", "netCash"),
        Column("close_price", "dec", "closePrice", "close of trade date", "price in currency"),
        _money("cost_basis", "cost"),
        _money("realized_pnl", "fifoPnlRealized", "FIFO realized P/L"),
        _money("mtm_pnl", "mtmPnl"),
        _s("notes", "notes", "codes joined with ';'"),
    ),
    ("_report_date", "trade_date"),
    ("account_id", "date", "level_of_detail", "transaction_id", "trade_id"),
    "Trades container rows of every kind; date = reportDate, else tradeDate, else toDate.",
)

CASH_TRANSACTIONS = _spec(
    "cash_transactions",
    "CashTransactions",
    {"CashTransaction": "DETAIL"},
    (
        _REPORT_DATE,
        _s("level_of_detail", "levelOfDetail", "DETAIL or SUMMARY (missing = DETAIL)"),
        _s("transaction_id", "transactionID"),
        _s("type", "type", "Dividends, Withholding Tax, Deposits/Withdrawals, ..."),
        CURRENCY,
        FX_TO_BASE,
        _money("amount", "amount"),
        _d("settle_date", "settleDate"),
        _ts("transaction_at", "dateTime"),
        CONID,
        _s("symbol", "symbol"),
        _s("description", "description"),
        _s("asset_category", "assetCategory"),
        _s("isin", "isin"),
        _s("action_id", "actionID"),
        _s("trade_id", "tradeID"),
        _s("code", "code"),
    ),
    ("_report_date",),
    ("account_id", "date", "level_of_detail", "transaction_id"),
    "CashTransaction rows (DETAIL and SUMMARY; use only DETAIL); date = reportDate.",
)

FX_RATES = _spec(
    "fx_rates",
    "ConversionRates",
    {"ConversionRate": None},
    (
        _REPORT_DATE,
        _s("from_currency", "fromCurrency"),
        _s("to_currency", "toCurrency", "the base currency"),
        Column(
            "rate", "dec", "rate", "null where IBKR writes -1", "to_currency per 1 from_currency"
        ),
    ),
    ("_report_date",),
    ("account_id", "date", "from_currency", "to_currency"),
    "ConversionRate rows: closing FX rates per report date.",
)

CUSIP = _s("cusip", "cusip")
FIGI = _s("figi", "figi")
LISTING_EXCHANGE = _s("listing_exchange", "listingExchange", "primary listing exchange")
UNDERLYING_CONID = Column(
    "underlying_conid", "int", "underlyingConid", "IBKR contract id of the underlying"
)
CODE = _s("code", "code", "IBKR codes as written, ';'-separated (Ca cancelled, Re reversal, ...)")
IDENTIFIERS: tuple[Column, ...] = (CUSIP, FIGI, LISTING_EXCHANGE, UNDERLYING_CONID)
_CAPITAL_FX_UNIT = "money in base currency"


def _dec(name: str, flex: str | None, doc: str, unit: str, **kw) -> Column:
    return Column(name, "dec", flex, doc, unit, **kw)


CORPORATE_ACTIONS = _spec(
    "corporate_actions",
    "CorporateActions",
    {"CorporateAction": "DETAIL"},
    (
        _REPORT_DATE,
        _s("level_of_detail", "levelOfDetail", "DETAIL or SUMMARY (missing = DETAIL)"),
        _s("transaction_id", "transactionID"),
        _s(
            "action_id",
            "actionID",
            "one id per corporate action: its rows (old and new line) share it",
        ),
        _s("type", "type", "reorg code: IC, TC, FS, RS, SO, TO, ..."),
        _s("action_description", "actionDescription"),
        CONID,
        *INSTRUMENT,
        FX_TO_BASE,
        _ts("action_at", "dateTime"),
        QUANTITY,
        _money("amount", "amount"),
        _money("proceeds", "proceeds"),
        _money("value", "value"),
        _money("cost_basis", "costBasis"),
        _money("realized_pnl", "fifoPnlRealized"),
        _money("mtm_pnl", "mtmPnl"),
        *IDENTIFIERS,
        CODE,
        _s("issuer", "issuer"),
        _dec("principal_adjust_factor", "principalAdjustFactor", "", "factor"),
        _dec(
            "capital_gains_pnl_base",
            "capitalGainsPnl",
            "capital part of realized P/L",
            _CAPITAL_FX_UNIT,
        ),
        _dec("fx_pnl_base", "fxPnl", "currency part of realized P/L", _CAPITAL_FX_UNIT),
    ),
    ("_report_date",),
    ("account_id", "date", "level_of_detail", "transaction_id"),
    "CorporateAction rows (DETAIL and SUMMARY); date = reportDate.",
)

TRANSFERS = _spec(
    "transfers",
    "Transfers",
    {"Transfer": "DETAIL"},
    (
        _REPORT_DATE,
        _d("_date", "date"),
        _s("level_of_detail", "levelOfDetail", "DETAIL or SUMMARY (missing = DETAIL)"),
        _s("transaction_id", "transactionID"),
        _s("type", "type", "INTERNAL, ACATS, ATON, FOP, ..."),
        _s("direction", "direction", "IN or OUT"),
        CONID,
        *INSTRUMENT,
        FX_TO_BASE,
        _ts("transfer_at", "dateTime"),
        _d("settle_date", "settleDate"),
        QUANTITY,
        Column("transfer_price", "dec", "transferPrice", "", "price in currency"),
        _money("position_amount", "positionAmount"),
        _base("position_amount_base", "positionAmountInBase"),
        _money("cash_transfer", "cashTransfer"),
        _s("counterparty_account", "account"),
        *IDENTIFIERS,
        CODE,
        _s("delivering_broker", "deliveringBroker"),
        _s("company", "company", "counterparty company"),
        _s("account_name", "accountName", "counterparty account name"),
        _money("pnl_amount", "pnlAmount", "P/L transferred with the position"),
        _base("pnl_amount_base", "pnlAmountInBase", "P/L transferred with the position"),
        _dec("capital_gains_pnl_base", "capitalGainsPnl", "", _CAPITAL_FX_UNIT),
        _dec("fx_pnl_base", "fxPnl", "", _CAPITAL_FX_UNIT),
        _s("client_reference", "clientReference"),
        _s("position_instruction_id", "positionInstructionID"),
        _s("position_instruction_set_id", "positionInstructionSetID"),
    ),
    ("_report_date", "_date"),
    ("account_id", "date", "level_of_detail", "transaction_id"),
    "Transfer rows (positions and cash moved in or out); date = reportDate, else date.",
)

OPTION_EVENTS = _spec(
    "option_events",
    "OptionEAE",
    {"OptionEAE": None},
    (
        _d("_date", "date"),
        _s(
            "transaction_type",
            "transactionType",
            "Assignment, Exercise or Expiration on the option's row; Buy or Sell on the "
            "underlying's row (the delivery leg); unknown values kept",
        ),
        _s("trade_id", "tradeID", "the matching Trades row (BookTrade) where there is one"),
        _s("related_trade_id", "relatedTradeID"),
        CONID,
        *INSTRUMENT,
        *IDENTIFIERS,
        FX_TO_BASE,
        Column("quantity", "dec", "quantity", "signed, as IBKR writes it", "shares/contracts"),
        Column("trade_price", "dec", "tradePrice", "", "price in currency"),
        Column("mark_price", "dec", "markPrice", "close on date", "price in currency"),
        _money("proceeds", "proceeds"),
        Column(
            "commissions_and_tax",
            "dec",
            "commisionsAndTax",
            "IBKR misspells the attribute; the correct spelling is read too",
            "money in the row's currency",
            alt=("commissionsAndTax",),
        ),
        _money("cost_basis", "costBasis"),
        _money("realized_pnl", "realizedPnl"),
        _dec("capital_gains_pnl_base", "capitalGainsPnl", "", _CAPITAL_FX_UNIT),
        _dec("fx_pnl_base", "fxPnl", "", _CAPITAL_FX_UNIT),
        _money("mtm_pnl", "mtmPnl"),
    ),
    ("_date",),
    ("account_id", "date", "conid", "transaction_type", "trade_id"),
    "OptionEAE: option exercises, assignments and expirations, each with the row of its "
    "underlying's delivery (Buy/Sell) where there is one; date = the event's date.",
)

INTEREST_ACCRUALS = _spec(
    "interest_accruals",
    "InterestAccruals",
    {"InterestAccrualsCurrency": None},
    (
        _s("currency", "currency", "ISO currency, or BASE_SUMMARY (all currencies, in base)"),
        _s(
            "level_of_detail",
            "levelOfDetail",
            "Currency per currency, BaseCurrency for BASE_SUMMARY (IBKR writes none)",
        ),
        _d("from_date", "fromDate"),
        _d("to_date", "toDate"),
        _money("starting_accrual_balance", "startingAccrualBalance"),
        _money("interest_accrued", "interestAccrued", "accrued in the window (charges < 0)"),
        _money("accrual_reversal", "accrualReversal", "accruals reversed when posted to cash"),
        _money("fx_translation", "fxTranslation", "BASE_SUMMARY: translation to base"),
        _money("ending_accrual_balance", "endingAccrualBalance"),
    ),
    ("to_date",),
    ("account_id", "date", "currency", "level_of_detail"),
    "InterestAccrualsCurrency over the window, per currency and BASE_SUMMARY; date = to_date. "
    "BASE_SUMMARY money is in base currency.",
)

DIVIDEND_ACCRUALS = _spec(
    "dividend_accruals",
    ("OpenDividendAccruals", "ChangeInDividendAccruals"),
    {"OpenDividendAccrual": "DETAIL", "ChangeInDividendAccrual": "DETAIL"},
    (
        _REPORT_DATE,
        _d("_date", "date"),
        Column(
            "accrual_kind",
            "str",
            None,
            "open: accrual outstanding at the statement's end (OpenDividendAccruals; date = "
            "toDate); change: accrual booked or reversed on date (ChangeInDividendAccruals; a "
            "reversal has code Re and negative amounts)",
            tag_value=(("OpenDividendAccrual", "open"), ("ChangeInDividendAccrual", "change")),
        ),
        _s("level_of_detail", "levelOfDetail", "DETAIL or SUMMARY (missing = DETAIL)"),
        _s("action_id", "actionID"),
        CONID,
        *INSTRUMENT,
        *IDENTIFIERS,
        FX_TO_BASE,
        _d("ex_date", "exDate"),
        _d("pay_date", "payDate"),
        Column("quantity", "dec", "quantity", "shares entitled", "shares"),
        _dec("gross_rate", "grossRate", "dividend per share", "money in the row's currency/share"),
        _money("gross_amount", "grossAmount"),
        _money("tax", "tax", "withholding tax, same sign as gross_amount"),
        _money("fee", "fee", "same sign as gross_amount"),
        _money("net_amount", "netAmount", "gross_amount - tax - fee"),
        CODE,
        _s("from_acct", "fromAcct"),
        _s("to_acct", "toAcct"),
    ),
    ("_report_date", "_date"),
    ("account_id", "date", "accrual_kind", "level_of_detail", "conid", "ex_date", "action_id"),
    "OpenDividendAccrual and ChangeInDividendAccrual rows (accrual_kind says which); date = "
    "reportDate, else date, else the statement's toDate (open accruals).",
)

SECURITIES = _spec(
    "securities",
    "SecuritiesInfo",
    {"SecurityInfo": None},
    (
        CONID,
        *INSTRUMENT,
        CUSIP,
        FIGI,
        _s("sedol", "sedol"),
        _s("security_id", "securityID"),
        _s("security_id_type", "securityIDType", "ISIN, CUSIP, FIGI, ..."),
        LISTING_EXCHANGE,
        UNDERLYING_CONID,
        _s("underlying_security_id", "underlyingSecurityID"),
        _s("underlying_listing_exchange", "underlyingListingExchange"),
        _s("underlying_category", "underlyingCategory"),
        _s("issuer", "issuer"),
        _s("issuer_country_code", "issuerCountryCode"),
        _d("maturity", "maturity", "bond/bill maturity date"),
        _d("issue_date", "issueDate"),
        _s("type", "type"),
        _dec("principal_adjust_factor", "principalAdjustFactor", "", "factor"),
        _s("settlement_policy_method", "settlementPolicyMethod"),
        CODE,
    ),
    (),
    ("account_id", "date", "conid"),
    "SecurityInfo rows as parsed: one per security per statement (IBKR writes no account: the "
    "statement's); date = the statement's toDate. A dimension keyed by conid across the history "
    "(a symbol or ISIN change keeps the conid): the latest row per conid is a dbt view.",
)

STATEMENT_OF_FUNDS = _spec(
    "statement_of_funds",
    "StmtFunds",
    {"StatementOfFundsLine": None},
    (
        _REPORT_DATE,
        Column("activity_date", "day", "date", "date of the activity (date part as written)"),
        _s(
            "level_of_detail",
            "levelOfDetail",
            "BaseCurrency (every line in base currency) or Currency (lines per currency)",
        ),
        _s("transaction_id", "transactionID"),
        _s("activity_code", "activityCode", "BUY, SELL, DIV, FRTAX, CINT, DINT, OFEE, DEP, ..."),
        _s("activity_description", "activityDescription"),
        _s("trade_id", "tradeID"),
        _s("order_id", "orderID"),
        _s("action_id", "actionID"),
        CONID,
        *INSTRUMENT,
        *IDENTIFIERS,
        FX_TO_BASE,
        _d("settle_date", "settleDate"),
        _s("buy_sell", "buySell"),
        Column("trade_quantity", "dec", "tradeQuantity", "", "shares/contracts/face"),
        Column("trade_price", "dec", "tradePrice", "", "price in the instrument's currency"),
        _money("trade_gross", "tradeGross"),
        _money("trade_commission", "tradeCommission"),
        _money("trade_tax", "tradeTax"),
        _s("trade_code", "tradeCode"),
        _money("debit", "debit", "<= 0"),
        _money("credit", "credit", ">= 0"),
        _money("amount", "amount", "debit + credit"),
        _money("balance", "balance", "running balance of currency after the line"),
    ),
    ("_report_date", "activity_date"),
    ("account_id", "date", "level_of_detail", "currency", "transaction_id"),
    "StatementOfFundsLine rows in statement order (balance runs over them); date = reportDate. "
    "With level_of_detail BaseCurrency, currency is the base currency.",
)

_PERF_COLUMNS: tuple[Column, ...] = (
    _REPORT_DATE,
    Column("from_date", "date", None, "first day of the statement period the figures cover"),
    Column("to_date", "date", None, "last day of the statement period the figures cover"),
    CONID,
    *(c for c in INSTRUMENT if c is not CURRENCY),
    LISTING_EXCHANGE,
    UNDERLYING_CONID,
    CODE,
)
_PERF_NOTE = (
    " Rows without conid are IBKR's totals (description 'Total (All Assets)', 'Other Fees', "
    "'Total P/L', ...): never add them to the per-instrument rows."
)

FIFO_PERFORMANCE = _spec(
    "fifo_performance",
    "FIFOPerformanceSummaryInBase",
    {"FIFOPerformanceSummaryUnderlying": None},
    (
        *_PERF_COLUMNS,
        _base("cost_adj_base", "costAdj", "cost basis adjustments"),
        _base("realized_st_profit_base", "realizedSTProfit", "short-term realized profit"),
        _base("realized_st_loss_base", "realizedSTLoss", "short-term realized loss (<= 0)"),
        _base("realized_lt_profit_base", "realizedLTProfit", "long-term realized profit"),
        _base("realized_lt_loss_base", "realizedLTLoss", "long-term realized loss (<= 0)"),
        _base("realized_pnl_base", "totalRealizedPnl", "total realized P/L"),
        _base("realized_capital_gains_pnl_base", "totalRealizedCapitalGainsPnl"),
        _base("realized_fx_pnl_base", "totalRealizedFxPnl"),
        _base("unrealized_profit_base", "unrealizedProfit"),
        _base("unrealized_loss_base", "unrealizedLoss"),
        _base("unrealized_st_profit_base", "unrealizedSTProfit"),
        _base("unrealized_st_loss_base", "unrealizedSTLoss"),
        _base("unrealized_lt_profit_base", "unrealizedLTProfit"),
        _base("unrealized_lt_loss_base", "unrealizedLTLoss"),
        _base("unrealized_pnl_base", "totalUnrealizedPnl", "total unrealized P/L at the end"),
        _base("unrealized_capital_gains_pnl_base", "totalUnrealizedCapitalGainsPnl"),
        _base("unrealized_fx_pnl_base", "totalUnrealizedFxPnl"),
        _base("total_pnl_base", "totalFifoPnl", "realized + unrealized"),
        _base("total_capital_gains_pnl_base", "totalCapitalGainsPnl"),
        _base("total_fx_pnl_base", "totalFxPnl"),
        _base("transferred_pnl_base", "transferredPnl"),
        _base("transferred_capital_gains_pnl_base", "transferredCapitalGainsPnl"),
        _base("transferred_fx_pnl_base", "transferredFxPnl"),
    ),
    ("_report_date",),
    ("account_id", "date", "asset_category", "conid"),
    "FIFOPerformanceSummaryUnderlying: IBKR's FIFO realized (short/long term) and unrealized P/L "
    "per instrument over the statement period (from_date..to_date), in base currency; date = "
    "reportDate." + _PERF_NOTE,
)

MTM_PERFORMANCE = _spec(
    "mtm_performance",
    "MTMPerformanceSummaryInBase",
    {"MTMPerformanceSummaryUnderlying": None},
    (
        *_PERF_COLUMNS,
        _dec("prev_close_quantity", "prevCloseQuantity", "", "shares/contracts/face"),
        _dec("prev_close_price", "prevClosePrice", "", "price in the instrument's currency"),
        _dec("close_quantity", "closeQuantity", "", "shares/contracts/face"),
        _dec("close_price", "closePrice", "", "price in the instrument's currency"),
        _base("transaction_mtm_base", "transactionMtm", "MTM of the period's transactions"),
        _base("prior_open_mtm_base", "priorOpenMtm", "MTM of the position held at the start"),
        _base("commissions_base", "commissions"),
        _base("corp_action_mtm_base", "corpActionMtm"),
        _base("dividends_base", "dividends"),
        _base("other_base", "other"),
        _base("other_with_accruals_base", "otherWithAccruals"),
        _base("total_base", "total"),
        _base("total_with_accruals_base", "totalWithAccruals"),
    ),
    ("_report_date",),
    ("account_id", "date", "asset_category", "conid"),
    "MTMPerformanceSummaryUnderlying: mark-to-market P/L per instrument over the statement "
    "period (from_date..to_date), in base currency; date = reportDate." + _PERF_NOTE,
)

_UCD, _STAX, _TTAX, _CFD = (
    "UnbundledCommissionDetail",
    "SalesTax",
    "TransactionTax",
    "CFDCharge",
)
_FEE_TAGS = (_UCD, _STAX, _TTAX, _CFD)


def _only(tag: str, flex: str) -> tuple[tuple[str, str | None], ...]:
    """``by_tag`` reading ``flex`` from ``tag`` rows only."""
    return tuple((t, flex if t == tag else None) for t in _FEE_TAGS)


def _fee(
    name: str, tag: str, flex: str, doc: str = "", unit: str = "money in the row's currency"
) -> Column:
    return Column(name, "dec", None, doc, unit, by_tag=_only(tag, flex))


FEES = _spec(
    "fees",
    ("UnbundledCommissionDetails", "SalesTaxes", "TransactionTaxes", "CFDCharges"),
    dict.fromkeys(_FEE_TAGS, "DETAIL"),
    (
        _REPORT_DATE,
        Column("_date", "date", "date", by_tag=((_TTAX, None),)),
        Column("_day", "day", "dateTime", by_tag=((_TTAX, "date"),)),
        Column(
            "fee_source",
            "str",
            None,
            "section of the row: UnbundledCommissionDetails, SalesTaxes, TransactionTaxes or "
            "CFDCharges (advisor and other fees stay in cash_transactions)",
            tag_value=(
                (_UCD, "UnbundledCommissionDetails"),
                (_STAX, "SalesTaxes"),
                (_TTAX, "TransactionTaxes"),
                (_CFD, "CFDCharges"),
            ),
        ),
        _s("level_of_detail", "levelOfDetail", "DETAIL or SUMMARY (missing = DETAIL)"),
        Column(
            "fee_at",
            "ts",
            "dateTime",
            "when charged",
            "UTC instant (IBKR writes America/New_York local time)",
            by_tag=((_TTAX, "date"), (_STAX, None)),
        ),
        Column("transaction_id", "str", "transactionID", alt=("transactionId",)),
        Column("trade_id", "str", "tradeID", "the trade charged", alt=("tradeId",)),
        Column(
            "fee_description",
            "str",
            None,
            by_tag=(
                (_UCD, None),
                (_STAX, "taxableDescription"),
                (_TTAX, "taxDescription"),
                (_CFD, "activityDescription"),
            ),
        ),
        CONID,
        *INSTRUMENT,
        FX_TO_BASE,
        Column(
            "amount",
            "dec",
            None,
            "the fee, signed as IBKR writes it (a charge < 0)",
            "money in the row's currency",
            by_tag=(
                (_UCD, "totalCommission"),
                (_STAX, "salesTax"),
                (_TTAX, "taxAmount"),
                (_CFD, "total"),
            ),
        ),
        _dec("quantity", "quantity", "quantity of the trade charged", "shares/contracts/face"),
        Column(
            "trade_price",
            "dec",
            "tradePrice",
            "price of the trade charged",
            "price in currency",
            by_tag=((_UCD, "price"),),
        ),
        _s("buy_sell", "buySell"),
        _s("exchange", "exchange"),
        _s("order_reference", "orderReference"),
        _fee("broker_execution_charge", _UCD, "brokerExecutionCharge"),
        _fee("broker_clearing_charge", _UCD, "brokerClearingCharge"),
        _fee("third_party_execution_charge", _UCD, "thirdPartyExecutionCharge"),
        _fee("third_party_clearing_charge", _UCD, "thirdPartyClearingCharge"),
        _fee("third_party_regulatory_charge", _UCD, "thirdPartyRegulatoryCharge"),
        _fee("finra_trading_activity_fee", _UCD, "regFINRATradingActivityFee"),
        _fee("section31_transaction_fee", _UCD, "regSection31TransactionFee"),
        _fee("regulatory_other", _UCD, "regOther"),
        _fee("other_charge", _UCD, "other"),
        _s("tax_type", "taxType", "sales tax type (VAT, GST, ...)"),
        _s("country", "country", "country levying the sales tax"),
        _s("payer", "payer"),
        _fee("taxable_amount", _STAX, "taxableAmount", "amount the sales tax is levied on"),
        _fee("tax_rate", _STAX, "taxRate", "", "fraction (0.21 = 21 %)"),
        _s("taxable_transaction_id", "taxableTransactionID"),
        _s("tax_source", "source", "TransactionTax source (TRADE, ...)"),
        _fee("cfd_received", _CFD, "received"),
        _fee("cfd_paid", _CFD, "paid"),
        _fee("cfd_amount", _CFD, "amount", "CFDCharge amount attribute as written"),
        CODE,
    ),
    ("_report_date", "_date", "_day"),
    ("account_id", "date", "fee_source", "level_of_detail", "transaction_id", "trade_id"),
    "Fee rows of UnbundledCommissionDetails, SalesTaxes, TransactionTaxes and CFDCharges "
    "(fee_source says which; amount is the fee of every kind). date = reportDate, else date, "
    "else the date part of dateTime. UnbundledCommissionDetails break down commissions that "
    "trades already carry: never add them to trades.commission.",
)

STOCK_GRANTS = _spec(
    "stock_grants",
    "StockGrantActivities",
    {"StockGrantActivity": None},
    (
        _REPORT_DATE,
        _s("activity_description", "activityDescription"),
        CONID,
        *INSTRUMENT,
        *IDENTIFIERS,
        FX_TO_BASE,
        _d("award_date", "awardDate"),
        _d("vesting_date", "vestingDate"),
        Column("quantity", "dec", "quantity", "shares granted", "shares"),
        Column("price", "dec", "price", "", "price in currency"),
        _money("value", "value"),
    ),
    ("_report_date", "award_date"),
    ("account_id", "date", "conid", "award_date", "vesting_date"),
    "StockGrantActivity rows (stock awards, their vesting); date = reportDate, else awardDate.",
)

FX_TRANSACTIONS = _spec(
    "fx_transactions",
    "FxTransactions",
    {"FxTransaction": None},
    (
        _REPORT_DATE,
        Column("_day", "day", "dateTime"),
        _s("level_of_detail", "levelOfDetail"),
        _s("asset_category", "assetCategory"),
        _s("functional_currency", "functionalCurrency", "the account's base currency"),
        _s("fx_currency", "fxCurrency", "the currency bought or sold"),
        _s("activity_description", "activityDescription"),
        _ts("transaction_at", "dateTime"),
        _dec("quantity", "quantity", "signed; sold < 0", "units of fx_currency"),
        _dec("proceeds", "proceeds", "", "money in functional_currency"),
        _dec("cost", "cost", "", "money in functional_currency"),
        _dec("realized_pnl", "realizedPL", "realized FX P/L", "money in functional_currency"),
        CODE,
    ),
    ("_report_date", "_day"),
    ("account_id", "date", "fx_currency", "transaction_at"),
    "FxTransaction rows: foreign currency lots bought and sold with their realized FX P/L in "
    "the functional (base) currency; date = reportDate, else the date part of dateTime.",
)

TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in (
        ACCOUNT_INFO,
        NAV_DAILY,
        CHANGE_IN_NAV,
        CASH_BALANCES,
        OPEN_POSITIONS,
        PRIOR_PERIOD_POSITIONS,
        TRADES,
        CASH_TRANSACTIONS,
        FX_RATES,
        CORPORATE_ACTIONS,
        TRANSFERS,
        OPTION_EVENTS,
        INTEREST_ACCRUALS,
        DIVIDEND_ACCRUALS,
        SECURITIES,
        STATEMENT_OF_FUNDS,
        FIFO_PERFORMANCE,
        MTM_PERFORMANCE,
        FEES,
        STOCK_GRANTS,
        FX_TRANSACTIONS,
    )
}
SCHEMAS: dict[str, pa.Schema] = {name: spec.schema for name, spec in TABLES.items()}

# positions_daily is derived (ibpipeline.flex.positions), not parsed: no ``extra`` column. ``flex``
# metadata names the OpenPosition attribute a column is copied from on the OpenPositions date.
POSITIONS_DAILY_COLUMNS: tuple[Column, ...] = (
    CONID,
    _s("level_of_detail", "levelOfDetail", "SUMMARY (one per conid) or LOT (OpenPositions date)"),
    _ts("lot_open_at", "openDateTime", "LOT rows: when the lot was opened (null for SUMMARY)"),
    *INSTRUMENT,
    Column(
        "quantity",
        "dec",
        "position",
        "end-of-day position; shorts negative",
        "shares/contracts/face",
    ),
    Column(
        "mark_price", "dec", "markPrice", "close on date", "price in currency (BOND: % of face)"
    ),
    _money(
        "position_value",
        "positionValue",
        "quantity x mark x multiplier (BOND: quantity x mark / 100; FUT: notional)",
    ),
    FX_TO_BASE,
    Column(
        "value_base",
        "dec",
        None,
        "NAV contribution: position_value x fx_rate_to_base (0 for FUT: variation margin "
        "settles into cash daily); exact, rounded half-even only at the 10th decimal place",
        "money in base currency",
    ),
    _money("cost_basis_money", "costBasisMoney", "null on reconstructed days"),
    _money(
        "unrealized_pnl", "fifoPnlUnrealized", "FIFO unrealized P/L; null on reconstructed days"
    ),
    Column("source", "str", None, "OpenPositions (as printed) or reconstructed"),
)
POSITIONS_DAILY: pa.Schema = pa.schema(
    [ACCOUNT_ID.field(), DATE_FIELD, *(c.field() for c in POSITIONS_DAILY_COLUMNS), SHA_FIELD],
    metadata={
        "doc": "End-of-day positions per report date: OpenPositions at the statement's last "
        "report date, earlier days reconstructed from trades, transfers and corporate actions.",
        "key": "account_id,date,conid,level_of_detail,lot_open_at",
    },
)


# Attributes IBKR documents (the fields of ibflex 1.1 ``Types.py``) that have no column: they are
# dropped; any other attribute is unknown and kept in ``extra``. CashReportCurrency and
# EquitySummaryByReportDateInBase names are listed once per base name (suffixes in _SUFFIXES).
_KNOWN_UNMAPPED: dict[str, str] = {
    "account_info": (
        "accountCapabilities accountRepName accountRepPhone city cityResidentialAddress country "
        "countryResidentialAddress ibEntity lastTradedDate model postalCode "
        "postalCodeResidentialAddress primaryEmail registeredRepName registeredRepPhone state "
        "stateResidentialAddress street street2 street2ResidentialAddress streetResidentialAddress "
        "tradingPermissions "
    ),
    "nav_daily": (
        "acctAlias bondInterestAccrualsComponent bonds brokerCashComponent "
        "brokerFeesAccrualsComponent brokerInterestAccrualsComponent cash cfdUnrealizedPl "
        "commodities crypto dividendAccruals eventContractInterestAccruals "
        "fdicInsuredAccountInterestAccruals fdicInsuredAccountInterestAccrualsComponent "
        "fdicInsuredBankSweepAccount fdicInsuredBankSweepAccountCashComponent forexCfdUnrealizedPl "
        "funds incentiveCouponAccruals insuredBankDepositRedemptionCashComponent interestAccruals "
        "ipoSubscription liteSurchargeAccruals marginFinancingChargeAccruals model notes options "
        "physDel slbCashCollateral slbDirectSecuritiesBorrowed slbDirectSecuritiesLent softDollars "
        "stock "
    ),
    "change_in_nav": (
        "acctAlias advisorFees billPay billableSalesTax brokerFees carbonCredits "
        "changeInBrokerFeeAccruals changeInDividendAccruals changeInIncentiveCouponAccruals "
        "changeInInterestAccruals clientFees commissionCreditsRedemption commissionReceivables "
        "commissionsAtPaxos corporateActionProceeds costAdjustments debitCardActivity donations "
        "excessFundSweep feesReceivables forexCommissions grantActivity linkingAdjustments model "
        "mtmAtPaxos netFxTrading otherIncome paxosTransfers referralFee salesTax softDollars "
        "taxReceivables transactionTax transferredPnlAdjustments withholding871m "
        "withholdingTaxCollected "
    ),
    "cash_balances": (
        "accountTransfers acctAlias advisorFee advisorFees avgCreditBalance avgDebitBalance billPay "
        "billableCommissions billableSalesTax billableSalesTaxIBUKL bondInterest brokerFees "
        "brokerInterest carbonCredits cashSettlingMtm cfdCharges clientFees "
        "commissionCreditsRedemption commissions debitCardActivity depositWithdrawals deposits "
        "dividends donations endingCash endingCashIBUKL endingSettledCash excessFundSweep "
        "feesReceivables fxTranslationGainLoss insuredDepositInteres insuredDepositInterest "
        "internalTransfers ipoSubscription linkingAdjustments model netTradesPurchases "
        "netTradesSales other otherFees otherIncome paxosTransfers paymentInLieu paymentInLieuIBUKL "
        "realizedForexVm realizedVm referralFee salesTax slbEndingCashCollateral slbNetCash "
        "slbNetSecuritiesLentActivity slbNetSettledCash slbStartingCashCollateral startingCash "
        "taxReceivables transactionTax withdrawals withholding871m withholdingCollectedTax "
        "withholdingTax "
    ),
    "open_positions": (
        "acctAlias commodityType cusip deliveryType figi fineness holdingPeriodDateTime issuer "
        "issuerCountryCode listingExchange model originatingOrderID originatingTransactionID "
        "positionValueInBase principalAdjustFactor securityID securityIDType sedol serialNumber "
        "underlyingConid underlyingListingExchange underlyingSecurityID unrealizedCapitalGainsPnl "
        "unrealizedlFxPnl vestingDate weight "
    ),
    "prior_period_positions": (
        "acctAlias commodityType cusip deliveryType figi fineness issuer issuerCountryCode "
        "listingExchange model principalAdjustFactor securityID securityIDType sedol serialNumber "
        "underlyingConid underlyingListingExchange underlyingSecurityID weight "
    ),
    "trades": (
        "TradePrice accruedInt acctAlias allocatedTo amount brokerClearingCommission "
        "brokerExecutionCommission brokerageOrderID capitalGainsPnl changeInPrice changeInQuantity "
        "clearingFirmID code commission commissionCurrency commodityType cusip deliveryType "
        "exchOrderId execID extExecID figi fineness fxPnl holdingPeriodDateTime initialInvestment "
        "isAPIOrder issuer issuerCountryCode listingExchange model netCashInBase openDateTime "
        "orderID orderReference orderTime origOrderID origTradeDate origTradeID origTradePrice "
        "origTransactionID otherCommission positionActionID price principalAdjustFactor "
        "relatedTradeID relatedTransactionID rtn securityID securityIDType sedol serialNumber "
        "settleDate tax thirdPartyClearingCommission thirdPartyExecutionCommission "
        "thirdPartyRegulatoryCommission tradeTime traderID underlyingConid "
        "underlyingListingExchange underlyingSecurityID volatilityOrderLink weight whenRealized "
        "whenReopened "
    ),
    "cash_transactions": (
        "acctAlias availableForTradingDate clientReference commodityType cusip deliveryType exDate "
        "expiry figi fineness issuer issuerCountryCode listingExchange model multiplier "
        "principalAdjustFactor putCall securityID securityIDType sedol serialNumber strike "
        "subCategory underlyingConid underlyingListingExchange underlyingSecurityID "
        "underlyingSymbol weight "
    ),
    "fx_rates": "",
    "corporate_actions": (
        "acctAlias commodityType deliveryType fineness issuerCountryCode model securityID "
        "securityIDType sedol serialNumber underlyingListingExchange underlyingSecurityID "
        "weight "
    ),
    "transfers": (
        "acctAlias commodityType deliveryType fineness issuer issuerCountryCode model "
        "principalAdjustFactor securityID securityIDType sedol serialNumber "
        "underlyingListingExchange underlyingSecurityID weight "
    ),
    "option_events": (
        "acctAlias commodityType deliveryType fineness initialInvestment issuer "
        "issuerCountryCode model origTransactionID principalAdjustFactor relatedTransactionID "
        "rtn securityID securityIDType serialNumber underlyingListingExchange "
        "underlyingSecurityID weight "
    ),
    "interest_accruals": ("acctAlias model "),
    "dividend_accruals": (
        "acctAlias commodityType deliveryType fineness issuer issuerCountryCode model "
        "principalAdjustFactor securityID securityIDType sedol serialNumber "
        "underlyingListingExchange underlyingSecurityID weight "
    ),
    "securities": (
        "commodityType deliveryType fineness initialInvestment origTransactionID relatedTradeID "
        "relatedTransactionID rtn serialNumber weight "
    ),
    "statement_of_funds": (
        "acctAlias commodityType deliveryType fineness issuer issuerCountryCode model "
        "origTransactionID principalAdjustFactor relatedTradeID relatedTransactionID securityID "
        "securityIDType serialNumber underlyingListingExchange underlyingSecurityID weight "
    ),
    "fifo_performance": (
        "acctAlias commodityType cusip deliveryType figi fineness issuer issuerCountryCode "
        "model principalAdjustFactor securityID securityIDType sedol serialNumber "
        "underlyingListingExchange underlyingSecurityID weight "
    ),
    "mtm_performance": (
        "acctAlias commodityType cusip deliveryType figi fineness issuer issuerCountryCode "
        "model principalAdjustFactor securityID securityIDType sedol serialNumber "
        "underlyingListingExchange underlyingSecurityID weight "
    ),
    "fees": (
        "acctAlias clientReference commodityType cusip deliveryType figi fineness issuer "
        "issuerCountryCode listingExchange model principalAdjustFactor securityID "
        "securityIDType sedol serialNumber underlyingConid underlyingListingExchange "
        "underlyingSecurityID weight "
    ),
    "stock_grants": (
        "acctAlias commodityType deliveryType fineness issuer issuerCountryCode model "
        "principalAdjustFactor securityID securityIDType serialNumber underlyingListingExchange "
        "underlyingSecurityID weight "
    ),
    "fx_transactions": ("acctAlias model "),
}
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "cash_balances": ("", "Sec", "Com", "MTD", "YTD", "Paxos"),
    "nav_daily": ("", "Long", "Short"),
}


def _known(spec: TableSpec) -> frozenset[str]:
    bases = set(_KNOWN_UNMAPPED[spec.name].split())
    bases |= {a for c in spec.columns for a in c.attributes}
    suffixes = _SUFFIXES.get(spec.name, ("",))
    return frozenset(base + suffix for base in bases for suffix in suffixes)


KNOWN_ATTRIBUTES: dict[str, frozenset[str]] = {name: _known(spec) for name, spec in TABLES.items()}
