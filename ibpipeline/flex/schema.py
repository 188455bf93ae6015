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

Every table starts with ``account_id`` and ``date`` (report date, ``date32``) and ends with
``statement_sha256`` and ``extra`` (``map<string, string>``: the non-empty attributes of the row
that are unknown, i.e. neither a column nor in :data:`KNOWN_ATTRIBUTES`, so attributes IBKR adds
later are kept; documented attributes without a column stay only in the raw XML). Field metadata
carries the Flex attribute (``flex``), the unit (``unit``) and a description (``doc``).

Currency conventions: ``*_base`` columns are in the account's base currency; other money columns
are in the row's ``currency``; ``fx_rate_to_base`` is base units per one unit of ``currency``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    """

    name: str
    kind: str
    flex: str | None
    doc: str = ""
    unit: str = ""

    @property
    def hidden(self) -> bool:
        return self.name.startswith("_")

    def field(self) -> pa.Field:
        meta = {"doc": self.doc, "unit": self.unit}
        if self.flex:
            meta["flex"] = self.flex
        return pa.field(
            self.name, KIND_TYPES[self.kind], metadata={k: v for k, v in meta.items() if v}
        )


@dataclass(frozen=True)
class TableSpec:
    """A normalized table read from one Flex section.

    ``section``: container element directly under ``FlexStatement`` (rows are its children), or
    None when ``row_tags`` are single elements directly under ``FlexStatement``.
    ``row_tags``: row element -> default ``level_of_detail`` when the attribute is missing.
    ``date_from``: columns coalesced (in order, then the statement's ``toDate``) into ``date``.
    """

    name: str
    section: str | None
    row_tags: MappingProxyType
    columns: tuple[Column, ...]
    date_from: tuple[str, ...]
    key: tuple[str, ...]
    doc: str
    by_flex: MappingProxyType = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "by_flex", MappingProxyType({c.flex: c for c in self.columns if c.flex})
        )

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
    section: str | None,
    row_tags: dict[str, str | None],
    columns: tuple[Column, ...],
    date_from: tuple[str, ...],
    key: tuple[str, ...],
    doc: str,
) -> TableSpec:
    return TableSpec(
        name, section, MappingProxyType(row_tags), (ACCOUNT_ID, *columns), date_from, key, doc
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

CORPORATE_ACTIONS = _spec(
    "corporate_actions",
    "CorporateActions",
    {"CorporateAction": "DETAIL"},
    (
        _REPORT_DATE,
        _s("level_of_detail", "levelOfDetail", "DETAIL or SUMMARY (missing = DETAIL)"),
        _s("transaction_id", "transactionID"),
        _s("action_id", "actionID"),
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
    ),
    ("_report_date", "_date"),
    ("account_id", "date", "level_of_detail", "transaction_id"),
    "Transfer rows (positions and cash moved in or out); date = reportDate, else date.",
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
        "acctAlias capitalGainsPnl code commodityType cusip deliveryType figi fineness fxPnl issuer "
        "issuerCountryCode listingExchange model principalAdjustFactor securityID securityIDType "
        "sedol serialNumber underlyingConid underlyingListingExchange underlyingSecurityID weight "
    ),
    "transfers": (
        "accountName acctAlias capitalGainsPnl clientReference code commodityType company cusip "
        "deliveringBroker deliveryType figi fineness fxPnl issuer issuerCountryCode listingExchange "
        "model pnlAmount pnlAmountInBase positionInstructionID positionInstructionSetID "
        "principalAdjustFactor securityID securityIDType sedol serialNumber underlyingConid "
        "underlyingListingExchange underlyingSecurityID weight "
    ),
}
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "cash_balances": ("", "Sec", "Com", "MTD", "YTD", "Paxos"),
    "nav_daily": ("", "Long", "Short"),
}


def _known(spec: TableSpec) -> frozenset[str]:
    bases = set(_KNOWN_UNMAPPED[spec.name].split()) | set(spec.by_flex)
    suffixes = _SUFFIXES.get(spec.name, ("",))
    return frozenset(base + suffix for base in bases for suffix in suffixes)


KNOWN_ATTRIBUTES: dict[str, frozenset[str]] = {name: _known(spec) for name, spec in TABLES.items()}
