"""Streaming Activity Flex XML parser: statement bytes -> one Arrow table per normalized table.

Two readers feed the same :class:`_Target`, which buffers rows and converts them to Arrow every
:data:`FLUSH_ROWS` rows; no element tree is ever built, so memory holds the buffered rows, the
output tables and one input chunk:

- bytes of the regular Flex shape go through the vectorized scanner (:mod:`ibpipeline.flex.scan`,
  :data:`SCAN_CHUNK_BYTES` at a time): the elements that are not rows through the target's
  callbacks, each run of row elements in bulk as Arrow columns (:class:`_ScanFeeder`);
- anything else, and every malformed input, through lxml with the target as its parser target
  (SAX-style callbacks, fed in 1 MiB chunks), which reports the errors (:func:`parse_with_lxml`).

Both give the same result (``tests/flex/test_scan.py``). The scanner is ~2.5x the lxml reader;
see ``bench/README.md``.

Per row the only Python work is: the attribute-name tuple selects a cached plan (per row tag and
attribute list), and one ``itemgetter`` keeps the values of the columns and of unknown attributes.
At a flush each plan's rows are ``zip``-ped into columns, all tables' values become one Arrow
string array, null tokens (``""``, ``-``, ``--``, ``N/A``, ``MULTI``) are nulled, and each kind is
converted with one vectorized call (decimal cast, date/time regex rewrite + strict cast); see
:mod:`ibpipeline.flex.schema` for kinds and units, :mod:`ibpipeline.flex.dates` for date formats.

Rules (``docs/tolerance.md``, "Parsing rules"): SUMMARY rows' ``accountId="-"`` and rows without
``accountId`` (ConversionRate) take the enclosing FlexStatement's account; a missing or empty
``levelOfDetail`` takes the row tag's default (``DETAIL`` for CashTransaction, ``SUMMARY`` for
OpenPosition, ``EXECUTION``/``ORDER``/... for Trades rows, ``BaseCurrency``/``Currency`` from the
currency for CashReportCurrency, and per-element values such as ``fees.fee_source`` or
``dividend_accruals.accrual_kind`` for tables read from several sections); a column reads the
attribute its spec names for the row's element (``Column.by_tag``), else another spelling
(``Column.alt``); unknown sections and unknown row elements are counted in
:attr:`ParsedFlex.skipped`, their rows in :attr:`ParsedFlex.skipped_rows`, and each kind that has
rows is a statement-level warning (``section X not imported: N row(s), kept in the raw file``);
unknown enum values are kept as strings. A value that does not convert
(not a number, a decimal with more than 10 places, a date in no Flex format) never fails the
parse: it is null, its raw text is kept in the row's ``extra`` under its Flex attribute name, and
it is counted in :attr:`ParsedFlex.problems`. Only a block that fails the vectorized conversion
is redone column by column, and only a failing column value by value. An account id that is not
safe (:data:`~ibpipeline.flex.schema.ACCOUNT_ID_SAFE`) raises :class:`FlexParseError`.

Statement context (account fallback aside) is applied in :meth:`_Target.result`, once every row
is read: a declared period longer than :data:`MAX_PERIOD_DAYS` is clipped to the rows' dates
first, and the account_info expansion, the ``date``/``from_date``/``to_date`` fallbacks use the
effective period.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from itertools import chain, repeat
from operator import itemgetter
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from lxml import etree

from ibpipeline.flex.dates import (
    DateFormat,
    DateParseError,
    candidate_formats,
    narrow_formats,
    parse_date,
    parse_datetime_any,
    to_date32,
    to_date32_tolerant,
    to_utc_timestamp,
    to_utc_timestamp_tolerant,
)
from ibpipeline.flex.errors import FlexError
from ibpipeline.flex.scan import BLOCK_BYTES, BOM, DECL_HEAD, HEAD, ChunkScan, IrregularXml, blocks
from ibpipeline.flex.schema import (
    ACCOUNT_ID_SAFE,
    DECIMAL,
    EXTRA_TYPE,
    KNOWN_ATTRIBUTES,
    NULL_TOKENS,
    SCHEMAS,
    TABLES,
    Column,
    TableSpec,
)
from ibpipeline.storage import atomic_write_with

CHUNK_BYTES = 1 << 20
SCAN_CHUNK_BYTES = BLOCK_BYTES
"""Bytes the vectorized scanner reads at a time (cut before a ``<``): bounds its working memory."""
FLUSH_ROWS = 50_000
_NULL_SET = pa.array(NULL_TOKENS, pa.string())
_NULL_STR = pa.scalar(None, pa.string())
_KIND_ORDER = ("str", "dec", "int", "date", "ts", "day")
_SECTION_TABLES = {section: s for s in TABLES.values() for section in s.sections}
_SINGLE_ROW_TABLES = {tag: s for s in TABLES.values() if not s.sections for tag in s.row_tags}
_EMPTY = {name: schema.empty_table() for name, schema in SCHEMAS.items()}
_ROOT = "FlexQueryResponse"
_ROW_DEPTH = 4  # FlexQueryResponse/FlexStatements/FlexStatement/<Section>/<Row>
_STMT = "__stmt"  # statement index of each row, until the statement context is applied
MAX_PERIOD_DAYS = 366
"""A declared period longer than this (IBKR serves at most 365 days) is clipped to the rows."""
MAX_SAMPLES = 3
_DEC_PLAIN = r"^[+-]?\d{1,28}(\.\d{0,10})?$"  # casts to decimal128(38, 10) without question
_INT_PLAIN = r"^[+-]?\d{1,18}$"
_TIME_ZONE = r"[;, T]*\d{2}:?\d{2}:?\d{2}(?:\s*(?:EDT|EST|ET|UTC|GMT|Z))?"  # after a date


def _today() -> date:
    return date.today()


class FlexParseError(FlexError, ValueError):
    """Input that is not a readable Activity Flex statement (invalid/truncated XML, wrong root,
    header dates in no Flex format, an unsafe account id)."""


class AccountSplitError(FlexParseError):
    """Parsing in parts (:class:`StatementParts`) met an account again after its part was
    finished (its statements are not consecutive): parse the document whole instead."""


@dataclass(frozen=True)
class StatementInfo:
    """One ``FlexStatement`` of a response. ``when_generated_at`` is UTC (IBKR writes New York time;
    None when absent or in no Flex format).

    ``declared_from_date``/``declared_to_date``: the period as written. ``from_date``/``to_date``:
    the effective period, equal to the declared one unless that is longer than
    :data:`MAX_PERIOD_DAYS` days (then clipped to the statement's row dates, see ``warnings``).
    """

    account_id: str
    from_date: date
    to_date: date
    period: str
    when_generated_at: datetime | None
    base_currency: str | None
    date_format: str
    declared_from_date: date
    declared_to_date: date


@dataclass(frozen=True)
class ParseProblem:
    """Values of one column that did not convert: each is null in ``table.column`` and its raw
    text is in the row's ``extra[attribute]`` (``attribute`` joins several names with ``/``
    when the column reads differently named attributes of several row elements). ``count``:
    values (rows); ``samples``: up to :data:`MAX_SAMPLES` distinct raw values; ``message``: what
    is wrong with them."""

    table: str
    column: str
    attribute: str
    count: int
    samples: tuple[str, ...]
    message: str

    def line(self) -> str:
        """The human-readable warning line."""
        shown = ", ".join(repr(v) for v in self.samples)
        return (
            f"{self.table}.{self.column}: {self.count} value(s) not converted, kept as null with "
            f"the raw text in extra[{self.attribute!r}] ({self.message}; e.g. {shown})"
        )


@dataclass(frozen=True)
class ParsedFlex:
    """Every normalized table (all names of ``schema.TABLES``, empty when absent) and the statements.

    ``skipped``: section (or ``Section/Row``) tag -> count of elements not read into a table.
    ``skipped_rows``: the same tags -> rows they held (a skipped element's child elements, or
    the element itself when it has attributes and no children; each ``Section/Row`` element).
    ``problems``: one per (table, column) with values that did not convert.
    ``warnings``: one line per problem, then every statement-level warning (count mismatch,
    clipped period, ambiguous date format, unreadable ``whenGenerated``, each skipped tag that
    held rows).
    """

    tables: Mapping[str, pa.Table]
    statements: tuple[StatementInfo, ...]
    source_sha256: str
    query_name: str | None
    query_type: str | None
    skipped: Mapping[str, int]
    warnings: tuple[str, ...]
    problems: tuple[ParseProblem, ...] = ()
    skipped_rows: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def __getitem__(self, name: str) -> pa.Table:
        return self.tables[name]

    @property
    def warning_count(self) -> int:
        """Values not converted (sum of problem counts) + statement-level warnings."""
        statement_level = len(self.warnings) - len(self.problems)
        return sum(p.count for p in self.problems) + statement_level


class _Plan:
    """Rows of one tag with one attribute-name tuple, and where each column sits in them."""

    __slots__ = ("rows", "pick", "positions", "defaults", "attributes", "extra", "kept")

    def __init__(self, keys: tuple, spec: TableSpec, known: frozenset, tag: str):
        by_name = {k: i for i, k in enumerate(keys)}
        # the attribute each column reads from this tag's rows: per-tag name, else flex, else
        # the first alternative spelling the row has
        self.attributes: list[str | None] = []
        for c in spec.columns:
            name = c.attribute(tag)
            if name not in by_name and c.alt and not c.by_tag:
                name = next((a for a in c.alt if a in by_name), name)
            self.attributes.append(name)
        kept = list(dict.fromkeys(by_name[a] for a in self.attributes if a in by_name))
        extra = [(k, i) for i, k in enumerate(keys) if k not in known]
        kept += [i for _, i in extra]
        slot = {i: j for j, i in enumerate(kept)}  # attribute index -> index in a kept row
        self.kept = kept
        self.rows: list[tuple[str, ...]] = []  # only the kept attribute values of each row
        self.pick = itemgetter(*kept) if len(kept) > 1 else lambda v: tuple(v[i] for i in kept)
        self.positions = [slot.get(by_name.get(a, -1)) for a in self.attributes]
        # value of a column when its attribute is missing or empty (level_of_detail, tag values)
        default_lod = spec.row_tags[tag]
        self.defaults = [
            dict(c.tag_value).get(tag, default_lod if c.name == "level_of_detail" else None)
            for c in spec.columns
        ]
        self.extra = tuple((k, slot[i]) for k, i in extra)  # unknown attributes: (name, slot)


@dataclass
class _ArrowRows:
    """Scanned rows of one table: their plans, each row's plan and statement index (document
    order), and per plan the kept attribute values (``_Plan.kept`` order) as Arrow strings."""

    plans: list[_Plan]
    plan_of_row: np.ndarray
    statement: np.ndarray
    columns: list[list[pa.Array]]


class _Buffer:
    """Rows of one table collected since the last flush (attribute values still strings)."""

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self.known = KNOWN_ATTRIBUTES[spec.name]
        # tag -> hash of the attribute-name tuple -> plan. Keyed by the hash, not the tuple, because
        # comparing ~90 freshly created names per row costs more than the whole lookup; a 64-bit
        # collision between two attribute lists of one table is not a practical concern.
        self.plans: dict[str, dict[int, _Plan]] = {tag: {} for tag in spec.row_tags}
        self.runs: list[tuple[_Plan, int]] = []  # (plan, its row count when it became current)
        self.last: _Plan | None = None
        self.marks: list[tuple[int, int]] = []  # (row number, statement index) where it starts
        # rows found by the scanner: (row segments of the current chunk, statement index) until
        # materialized as Arrow columns; a buffer holds scanned rows or parsed rows, never both
        self.pending: list[tuple[np.ndarray, int | None]] = []
        self.arrow: list[_ArrowRows] = []
        self.kind_columns = {
            k: [i for i, c in enumerate(spec.columns) if c.kind == k] for k in _KIND_ORDER
        }

    def new_plan(self, tag: str, keys: tuple) -> _Plan:
        plan = _Plan(keys, self.spec, self.known, tag)
        self.plans[tag][hash(keys)] = plan
        return plan

    def switch(self, plan: _Plan) -> None:
        """Record that rows now go to ``plan`` (keeps document order across plans)."""
        self.runs.append((plan, len(plan.rows)))
        self.last = plan

    def add(self, tag: str, attrib: dict) -> None:
        keys = tuple(attrib)
        plan = self.plans[tag].get(hash(keys)) or self.new_plan(tag, keys)
        if plan is not self.last:
            self.switch(plan)
        plan.rows.append(plan.pick(tuple(attrib.values())))

    def count(self) -> int:
        return sum(len(p.rows) for plans in self.plans.values() for p in plans.values())

    def segments(self) -> list[tuple[_Plan, int, int]]:
        """(plan, first row, end row) slices in document order."""
        ends: dict[int, int] = {}
        out = []
        for plan, start in reversed(self.runs):
            end = ends.get(id(plan), len(plan.rows))
            ends[id(plan)] = start
            if end > start:
                out.append((plan, start, end))
        out.reverse()
        return out

    def materialize(self, scan: ChunkScan) -> None:
        """Turn the pending scanned rows into Arrow columns (before their chunk goes away)."""
        if not self.pending:
            return
        rows = np.concatenate([r for r, _ in self.pending])
        stmt = np.repeat(
            np.asarray([-1 if i is None else i for _, i in self.pending], np.int64),
            [len(r) for r, _ in self.pending],
        )
        self.pending = []
        sig, names = scan.signatures(rows)
        plan_ids: dict[int, int] = {}
        plans: list[_Plan] = []
        of_sig = np.empty(len(names), np.int64)
        for k, (tag, keys) in enumerate(names):
            plan = self.plans[tag].get(hash(keys)) or self.new_plan(tag, keys)
            of_sig[k] = plan_ids.setdefault(id(plan), len(plans))
            if of_sig[k] == len(plans):
                plans.append(plan)
        plan_of_row = of_sig[sig]
        columns = []
        for i, plan in enumerate(plans):
            members = rows[plan_of_row == i]
            columns.append([scan.values(members, k) for k in plan.kept])
        self.arrow.append(_ArrowRows(plans, plan_of_row, stmt, columns))

    def clear(self, current_statement: int | None) -> None:
        for plans in self.plans.values():
            for plan in plans.values():
                plan.rows = []
        self.runs, self.last = [], None
        self.arrow = []
        self.marks = [] if current_statement is None else [(0, current_statement)]

    def statement_index(self, n: int) -> np.ndarray:
        """Statement index of each of the ``n`` buffered rows."""
        starts = [m[0] for m in self.marks] + [n]
        lengths = np.diff(np.asarray(starts, dtype=np.int64))
        return np.repeat(np.asarray([m[1] for m in self.marks], dtype=np.int64), lengths)


@dataclass
class _Header:
    """A FlexStatement's raw attributes until its date format is resolved."""

    account_id: str
    from_date: str
    to_date: str
    period: str
    when_generated: str | None
    base_currency: str | None = None
    info: StatementInfo | None = None


class _Target:
    """lxml parser target: collects rows into buffers and flushes them into Arrow tables."""

    def __init__(self) -> None:
        self.depth = 0
        self.container: _Buffer | None = None
        self.container_tag = ""
        self.statement: int | None = None
        self.headers: list[_Header] = []
        self.buffers = {name: _Buffer(spec) for name, spec in TABLES.items()}
        self.results: dict[str, list[pa.Table]] = {name: [] for name in TABLES}
        self.batch: list[int] = []  # statement indexes not yet flushed
        self.candidates: tuple[DateFormat, ...] = ()
        self.skipped: Counter[str] = Counter()
        self.skipped_rows: Counter[str] = Counter()
        self.outside: set[str] = set()  # skipped tags met outside any FlexStatement
        # the skipped element being read (tag, depth): its child elements are its rows
        self.skip_tag: str | None = None
        self.skip_depth = -1
        self.skip_children = 0
        self.skip_attributes = False
        self.warnings: list[str] = []  # statement-level
        self.problems = _Problems()
        self.query_name: str | None = None
        self.query_type: str | None = None
        self.declared_count: int | None = None
        self.buffered = 0
        self.flushed = 0  # rows converted by earlier flushes
        self.scan: ChunkScan | None = None  # the chunk being fed by the scanner
        # parts (StatementParts): None = one result for the whole document
        self.part_rows: int | None = None
        self.part_first = 0  # index of the first statement of the part being read
        self.part_mark = 0  # rows read before that part
        self.part_accounts: set[str] = set()  # accounts of the parts already finished
        self.resume_at: int | None = None  # a part ends before this statement (lxml restart)
        self.parts: list[ParsedFlex] = []  # finished, not yet handed out
        self.sha256 = ""

    # -- lxml callbacks ------------------------------------------------------------------------

    def start(self, tag: str, attrib: dict) -> None:
        depth = self.depth
        self.depth = depth + 1
        if depth == _ROW_DEPTH:
            buf = self.container
            if buf is None:
                if depth == self.skip_depth + 1:
                    self.skip_children += 1
                return
            plans = buf.plans.get(tag)
            if plans is None:
                key = f"{self.container_tag}/{tag}"
                self.skipped[key] += 1
                self.skipped_rows[key] += 1
                return
            keys = tuple(attrib)
            plan = plans.get(hash(keys)) or buf.new_plan(tag, keys)
            if plan is not buf.last:
                buf.switch(plan)
            plan.rows.append(plan.pick(tuple(attrib.values())))
            self.buffered += 1
            if self.buffered >= FLUSH_ROWS:
                self.flush()
        elif self.skip_tag is not None:  # inside a skipped element
            if depth == self.skip_depth + 1:
                self.skip_children += 1
        elif depth == _ROW_DEPTH - 1 and self.statement is not None:
            self._section(tag, attrib)
        elif depth == 2 and tag == "FlexStatement":
            self._statement_start(attrib)
        elif depth == 0:
            self._root(tag, attrib)
        elif depth == 1 and tag == "FlexStatements":
            count = attrib.get("count")
            self.declared_count = int(count) if count and count.isdigit() else None
        elif depth <= 2:
            self.skipped[tag] += 1
            self.outside.add(tag)
            self._skip(tag, depth, attrib)

    def _skip(self, tag: str, depth: int, attrib: dict) -> None:
        """Start reading a skipped element: its rows are counted until it ends."""
        self.skip_tag, self.skip_depth = tag, depth
        self.skip_children, self.skip_attributes = 0, bool(attrib)

    def _skip_end(self) -> None:
        rows = self.skip_children or int(self.skip_attributes)
        if rows:
            self.skipped_rows[self.skip_tag] += rows
        self.skip_tag, self.skip_depth = None, -1

    def end(self, tag: str) -> None:
        self.depth -= 1
        if self.depth == _ROW_DEPTH - 1:
            self.container = None
            if self.skip_depth == _ROW_DEPTH - 1:
                self._skip_end()
        elif self.depth == 2 and tag == "FlexStatement":
            self.statement = None
            if self.buffered >= FLUSH_ROWS:
                self.flush()
        elif self.depth == self.skip_depth:
            self._skip_end()

    def close(self) -> None:
        return None

    # -- structure -----------------------------------------------------------------------------

    def _root(self, tag: str, attrib: dict) -> None:
        if tag == "FlexStatementResponse":
            raise FlexParseError(
                "root element is <FlexStatementResponse>: a Flex Web Service status/error "
                "envelope, not a statement"
            )
        if tag != _ROOT:
            raise FlexParseError(f"root element is <{tag}>, expected <{_ROOT}>")
        self.query_name = attrib.get("queryName")
        self.query_type = attrib.get("type")

    def _statement_start(self, attrib: dict) -> None:
        if self.part_rows is not None and self.headers:
            self._part_boundary(attrib.get("accountId", ""))
        header = _Header(
            account_id=attrib.get("accountId", ""),
            from_date=attrib.get("fromDate", ""),
            to_date=attrib.get("toDate", ""),
            period=attrib.get("period", ""),
            when_generated=attrib.get("whenGenerated") or None,
        )
        index = len(self.headers)
        if not _is_safe_id(header.account_id):
            raise FlexParseError(
                f"FlexStatement #{index + 1}: unsafe account id {header.account_id!r} in its "
                "accountId attribute (an account id names files, SQL literals and Dagster "
                "partitions: 1-64 letters, digits, '_', '-', '*' or '.', no '..')"
            )
        cands = candidate_formats(header.from_date, header.to_date, header.when_generated)
        if not cands:
            raise FlexParseError(
                f"FlexStatement #{index + 1} (account {header.account_id!r}): fromDate="
                f"{header.from_date!r} toDate={header.to_date!r} whenGenerated="
                f"{header.when_generated!r} fit no Flex date format"
            )
        common = tuple(f for f in self.candidates if f in cands)
        if self.batch and not common:
            self.flush()
        self.candidates = common if self.batch else cands
        self.headers.append(header)
        self.batch.append(index)
        self.statement = index
        for buf in self.buffers.values():
            buf.marks.append((buf.count(), index))

    def _part_boundary(self, account_id: str) -> None:
        """Before a statement of ``account_id``: finish the part being read when it holds
        ``part_rows`` rows or more and the account changes (an account's statements stay in one
        part), or when the restart of a parse must end a part here."""
        index = len(self.headers)
        full = self.flushed + self.buffered - self.part_mark >= self.part_rows
        if index == self.resume_at or (full and account_id != self.headers[-1].account_id):
            self.parts.append(self.part(final=False))
        if account_id in self.part_accounts:
            raise AccountSplitError(
                f"account {account_id!r} has statements in two parts of the document"
            )

    def _section(self, tag: str, attrib: dict) -> None:
        buf_spec = _SECTION_TABLES.get(tag)
        if buf_spec is not None:
            self.container = self.buffers[buf_spec.name]
            self.container_tag = tag
            return
        single = _SINGLE_ROW_TABLES.get(tag)
        if single is None:
            self.skipped[tag] += 1
            self._skip(tag, _ROW_DEPTH - 1, attrib)
            return
        if tag == "AccountInformation":
            self.headers[self.statement].base_currency = attrib.get("currency") or None
        self.buffers[single.name].add(tag, attrib)
        self.buffered += 1

    # -- conversion ----------------------------------------------------------------------------

    def flush(self) -> None:
        """Convert every buffered row into Arrow tables with the batch's resolved date format."""
        self.materialize()
        staged = _Staged([buf for buf in self.buffers.values() if buf.runs or buf.arrow])
        fmt = self._resolve_format(staged)
        for index in self.batch:
            self._resolve_statement(index, fmt)
        accounts = pa.array([h.account_id for h in self.headers], pa.string())
        for name, table in staged.convert(fmt, accounts, self.problems).items():
            self.results[name].append(table)
        current = self.statement
        for buf in self.buffers.values():
            buf.clear(current)
        self.flushed += self.buffered
        self.buffered = 0
        self.batch = [current] if current is not None else []
        self.candidates = (fmt,) if current is not None else ()

    def materialize(self) -> None:
        """Turn every buffer's pending scanned rows into Arrow columns."""
        if self.scan is not None:
            for buf in self.buffers.values():
                buf.materialize(self.scan)

    def _resolve_format(self, staged: _Staged) -> DateFormat:
        cands = self.candidates
        if len(cands) > 1:
            for kind in ("date", "ts", "day"):
                if len(cands) > 1:
                    cands = narrow_formats(cands, staged.blocks[kind])
            if len(cands) > 1:
                self.warnings.append(
                    f"statements {self._batch_label()}: every date fits "
                    f"{' and '.join(f.name for f in cands)}; assumed {cands[0].name}"
                )
        return cands[0]

    def _batch_label(self) -> str:
        return ", ".join(self.headers[i].account_id for i in self.batch)

    def _resolve_statement(self, index: int, fmt: DateFormat) -> None:
        header = self.headers[index]
        if header.info is not None:
            return
        generated_at = None
        if header.when_generated:
            try:
                generated_at = parse_datetime_any(header.when_generated, fmt)
            except DateParseError as exc:
                self.warnings.append(
                    f"statement #{index + 1} (account {header.account_id}): whenGenerated {exc}; "
                    "when_generated_at is null"
                )
        start, end = parse_date(header.from_date, fmt), parse_date(header.to_date, fmt)
        header.info = StatementInfo(
            account_id=header.account_id,
            from_date=start,
            to_date=end,
            period=header.period,
            when_generated_at=generated_at,
            base_currency=header.base_currency,
            date_format=fmt.name,
            declared_from_date=start,
            declared_to_date=end,
        )

    def _effective_periods(self, tables: dict[str, pa.Table]) -> None:
        """Clip each declared period longer than MAX_PERIOD_DAYS to its rows' dates (warning)."""
        long = [
            i
            for i, h in enumerate(self.headers)
            if i >= self.part_first
            and h.info is not None
            and (h.info.declared_to_date - h.info.declared_from_date).days + 1 > MAX_PERIOD_DAYS
        ]
        if not long:
            return
        spans: dict[int, tuple[date, date]] = {}
        for name, table in tables.items():
            if name == "account_info" or table.num_rows == 0:
                continue
            agg = table.group_by(_STMT).aggregate([("date", "min"), ("date", "max")])
            for i, lo, hi in zip(
                *(agg[c].to_pylist() for c in (_STMT, "date_min", "date_max")), strict=True
            ):
                if lo is not None:
                    old = spans.get(i, (lo, hi))
                    spans[i] = (min(old[0], lo), max(old[1], hi))
        for i in long:
            header, info = self.headers[i], self.headers[i].info
            declared = f"{info.declared_from_date}..{info.declared_to_date}"
            lo, hi = spans.get(i, (info.declared_to_date + timedelta(1), info.declared_to_date))
            lo, hi = max(lo, info.declared_from_date), min(hi, info.declared_to_date)
            label = f"statement #{i + 1} (account {header.account_id}): declared period {declared}"
            days = (info.declared_to_date - info.declared_from_date).days + 1
            if lo <= hi:
                why = f"clipped to the span of its row dates {lo}..{hi}"
            else:
                lo = hi = max(info.declared_from_date, min(info.declared_to_date, _today()))
                why = f"it has no dated rows in that period; effective period is the day {lo}"
            self.warnings.append(f"{label} is {days} days (IBKR serves at most 365); {why}")
            header.info = dataclasses.replace(info, from_date=lo, to_date=hi)

    def result(self, sha256: str) -> ParsedFlex:
        """The whole document (or, in parts, its last part), once it has been read."""
        self.sha256 = sha256
        return self.part(final=True)

    def part(self, final: bool) -> ParsedFlex:
        """The statements read since the last part (all of them when there are no parts), their
        rows, their warnings and problems; the document-level warnings (count, skipped tags) and
        counters go with the ``final`` part."""
        if self.batch or any(buf.runs or buf.pending or buf.arrow for buf in self.buffers.values()):
            self.flush()
        if final and self.declared_count is not None and self.declared_count != len(self.headers):
            self.warnings.append(
                f"FlexStatements count={self.declared_count} but {len(self.headers)} "
                "FlexStatement elements found; all of them were read"
            )
        if final:
            self.warnings += [
                _skipped_line(k, n, k in self.outside) for k, n in self.skipped_rows.items()
            ]
        sha256 = self.sha256
        joined = {
            name: parts[0] if len(parts) == 1 else pa.concat_tables(parts)
            for name, parts in self.results.items()
            if parts
        }
        self._effective_periods(joined)
        ctx = _StatementColumns(self.headers)
        tables = {
            name: _with_sha(_finish(name, joined[name], ctx), sha256)
            if name in joined
            else _EMPTY[name]
            for name in self.results
        }
        problems = self.problems.result()
        part = ParsedFlex(
            tables=MappingProxyType(tables),
            statements=tuple(h.info for h in self.headers[self.part_first :] if h.info is not None),
            source_sha256=sha256,
            query_name=self.query_name,
            query_type=self.query_type,
            skipped=MappingProxyType(dict(self.skipped) if final else {}),
            warnings=tuple(p.line() for p in problems) + tuple(self.warnings),
            problems=problems,
            skipped_rows=MappingProxyType(dict(self.skipped_rows) if final else {}),
        )
        self.results = {name: [] for name in TABLES}
        self.problems, self.warnings = _Problems(), []
        self.part_accounts.update(h.account_id for h in self.headers[self.part_first :])
        self.part_first, self.part_mark = len(self.headers), self.flushed
        return part


def _skipped_line(tag: str, rows: int, outside: bool) -> str:
    """The warning of a skipped tag that held rows."""
    if "/" in tag:
        section, row = tag.split("/", 1)
        what = f"{row} rows of section {section}"
    else:
        what = f"element {tag} outside FlexStatement" if outside else f"section {tag}"
    return f"{what} not imported: {rows} row(s), kept in the raw file"


class _Problems:
    """Values that did not convert, per (table, column), across flushes."""

    def __init__(self) -> None:
        self.found: dict[
            tuple[str, str], tuple[Column, list[str], dict[str, None], dict[str, None]]
        ] = {}

    def add(
        self,
        table: str,
        column: Column,
        bad: list[tuple[int, str, str]],
        attributes: list[str],
    ) -> None:
        _, raws, messages, names = self.found.setdefault((table, column.name), (column, [], {}, {}))
        raws.extend(raw for _, raw, _ in bad)
        messages.update(dict.fromkeys(message for _, _, message in bad))
        names.update(dict.fromkeys(attributes))

    def result(self) -> tuple[ParseProblem, ...]:
        return tuple(
            ParseProblem(
                table=table,
                column=name,
                attribute="/".join(attributes),
                count=len(raws),
                samples=tuple(dict.fromkeys(raws))[:MAX_SAMPLES],
                message="; ".join(messages),
            )
            for (table, name), (column, raws, messages, attributes) in self.found.items()
        )


def _is_safe_id(account_id: str) -> bool:
    return ".." not in account_id and re.fullmatch(ACCOUNT_ID_SAFE, account_id) is not None


def _with_sha(table: pa.Table, sha256: str) -> pa.Table:
    i = table.schema.get_field_index("statement_sha256")
    column = pa.repeat(pa.scalar(sha256, pa.string()), table.num_rows)
    return table.set_column(i, table.schema.field(i), column)


class _StatementColumns:
    """Per-statement values as Arrow arrays (effective period), taken by row statement index."""

    def __init__(self, headers: list[_Header]) -> None:
        infos = [h.info for h in headers]
        self.base_currency = pa.array([h.base_currency for h in headers], pa.string())
        self.from_date = pa.array([i.from_date if i else None for i in infos], pa.date32())
        self.to_date = pa.array([i.to_date if i else None for i in infos], pa.date32())


def _column_pieces(
    buf: _Buffer, plans: list[_Plan], zipped: dict, column: int
) -> Iterator[Iterable]:
    """One spec column's values, plan after plan (None or the row tag's default when absent)."""
    for plan in plans:
        pos = plan.positions[column]
        default = plan.defaults[column]
        if pos is None:
            yield repeat(default, len(plan.rows))
        else:
            values = zipped[id(plan)][pos]
            yield (v or default for v in values) if default and "" in values else values


def _extra_column(plans: list[_Plan], n: int) -> pa.Array:
    """``extra`` maps, plan after plan: the unknown non-empty attributes of each row."""
    if not any(plan.extra for plan in plans):
        return pa.MapArray.from_arrays(
            pa.array(np.zeros(n + 1, np.int32)),
            pa.array([], pa.string()),
            pa.array([], pa.string()),
            type=EXTRA_TYPE,
        )
    maps = [[(k, row[i]) for k, i in plan.extra if row[i]] for plan in plans for row in plan.rows]
    return pa.array(maps, EXTRA_TYPE)


def _scanned_extra(plans: list[_Plan], columns: list[list[pa.Array]], sizes: list[int]) -> pa.Array:
    """``extra`` maps of scanned rows, plan after plan: the unknown non-empty attributes."""
    if not any(plan.extra for plan in plans):
        return _extra_column([], sum(sizes))
    maps: list[list[tuple[str, str]]] = []
    for plan, cols, size in zip(plans, columns, sizes, strict=True):
        if not plan.extra:
            maps.extend([] for _ in range(size))
            continue
        names = [k for k, _ in plan.extra]
        values = [cols[i].to_pylist() for _, i in plan.extra]
        maps.extend(
            [(k, v) for k, v in zip(names, row, strict=True) if v]
            for row in zip(*values, strict=True)
        )
    return pa.array(maps, EXTRA_TYPE)


def _string_array(items: Iterable[Iterable | pa.Array]) -> pa.Array:
    """One string array of ``items`` in order: Python value iterables (converted together) and
    Arrow string arrays."""
    parts: list[pa.Array] = []
    python: list[Iterable] = []
    for item in items:
        if isinstance(item, pa.Array):
            if python:
                parts.append(pa.array(list(chain.from_iterable(python)), pa.string()))
                python = []
            parts.append(item)
        else:
            python.append(item)
    if python or not parts:
        parts.append(pa.array(list(chain.from_iterable(python)), pa.string()))
    return parts[0] if len(parts) == 1 else pa.concat_arrays(parts)


def _document_order(plans: list[_Plan], segments: list) -> np.ndarray | None:
    """Permutation taking plan-after-plan rows to document order (None when they coincide)."""
    if len(plans) == 1:
        return None
    first_row: dict[int, int] = {}
    total = 0
    for plan in plans:
        first_row[id(plan)] = total
        total += len(plan.rows)
    starts = np.asarray([first_row[id(p)] + s for p, s, _ in segments], dtype=np.int64)
    lengths = np.asarray([e - s for _, s, e in segments], dtype=np.int64)
    run_start = np.cumsum(lengths) - lengths
    return np.repeat(starts - run_start, lengths) + np.arange(total, dtype=np.int64)


class _Staged:
    """The buffered rows of every table as one Arrow string array (null tokens nulled), laid out
    kind by kind, so each kind is converted with one vectorized call for all tables.

    Rows are laid out plan after plan (each plan's columns come from one ``zip``); ``order[name]``
    restores document order when a section interleaves row kinds (Trade/Order/Lot).
    """

    def __init__(self, buffers: list[_Buffer]) -> None:
        self.buffers = buffers
        self.n: dict[str, int] = {}
        self.statements: dict[str, np.ndarray] = {}
        self.extra: dict[str, pa.Array] = {}
        self.order: dict[str, np.ndarray | None] = {}
        self.layout: dict[str, list[tuple[int, str, int]]] = {k: [] for k in _KIND_ORDER}
        self.raw_extra: dict[str, list[tuple[int, str, str]]] = {}  # unconverted values
        self.plans: dict[str, tuple[list[int], list[_Plan]]] = {}  # first row of each plan
        pieces: dict[str, list[Iterable | pa.Array]] = {k: [] for k in _KIND_ORDER}
        for buf in buffers:
            name = buf.spec.name
            if buf.arrow:
                self._stage_scanned(buf, pieces)
                continue
            segments = buf.segments()
            plans = list({id(p): p for p, _, _ in segments}.values())
            n = self.n[name] = sum(len(p.rows) for p in plans)
            firsts = np.cumsum([0, *(len(p.rows) for p in plans)])[:-1].tolist()
            self.plans[name] = (firsts, plans)
            order = self.order[name] = _document_order(plans, segments)
            statements = buf.statement_index(n)
            if order is not None:
                statements = statements[np.argsort(order)]
            self.statements[name] = statements  # plan-after-plan, like the columns
            self.extra[name] = _extra_column(plans, n)
            zipped = {id(p): list(zip(*p.rows, strict=True)) for p in plans}
            for kind in _KIND_ORDER:
                for i in buf.kind_columns[kind]:
                    self.layout[kind].append((i, name, n))
                    pieces[kind].extend(_column_pieces(buf, plans, zipped, i))
        sizes = {k: sum(n for _, _, n in self.layout[k]) for k in _KIND_ORDER}
        values = _string_array(chain.from_iterable(pieces[k] for k in _KIND_ORDER))
        values = pc.if_else(pc.is_in(values, value_set=_NULL_SET), _NULL_STR, values)
        self.blocks: dict[str, pa.Array] = {}
        offset = 0
        for kind in _KIND_ORDER:
            self.blocks[kind] = values.slice(offset, sizes[kind])
            offset += sizes[kind]

    def _stage_scanned(self, buf: _Buffer, pieces: dict[str, list[Iterable | pa.Array]]) -> None:
        """Stage a buffer of scanned rows (Arrow columns), laid out like parsed rows."""
        name = buf.spec.name
        plans: list[_Plan] = []
        index: dict[int, int] = {}
        per_plan: list[list[list[pa.Array]]] = []  # plan -> kept slot -> parts
        plan_of_row, statements = [], []
        for part in buf.arrow:
            remap = np.empty(len(part.plans), np.int64)
            for j, plan in enumerate(part.plans):
                i = index.setdefault(id(plan), len(plans))
                if i == len(plans):
                    plans.append(plan)
                    per_plan.append([[] for _ in plan.kept])
                remap[j] = i
                for slot, values in enumerate(part.columns[j]):
                    per_plan[i][slot].append(values)
            plan_of_row.append(remap[part.plan_of_row])
            statements.append(part.statement)
        doc_plan = np.concatenate(plan_of_row)
        n = self.n[name] = len(doc_plan)
        columns = [
            [pa.concat_arrays(parts) if len(parts) > 1 else parts[0] for parts in slots]
            for slots in per_plan
        ]
        sizes = [
            len(c[0]) if c else int(np.count_nonzero(doc_plan == i)) for i, c in enumerate(columns)
        ]
        firsts = np.cumsum([0, *sizes])[:-1].tolist()
        self.plans[name] = (firsts, plans)
        layout = np.argsort(doc_plan, kind="stable")  # plan-after-plan position -> document row
        self.statements[name] = np.concatenate(statements)[layout]
        if len(plans) == 1:
            self.order[name] = None
        else:
            order = np.empty(n, np.int64)
            order[layout] = np.arange(n, dtype=np.int64)
            self.order[name] = order
        self.extra[name] = _scanned_extra(plans, columns, sizes)
        for kind in _KIND_ORDER:
            for i in buf.kind_columns[kind]:
                self.layout[kind].append((i, name, n))
                for plan, cols, size in zip(plans, columns, sizes, strict=True):
                    pos, default = plan.positions[i], plan.defaults[i]
                    if pos is None:
                        pieces[kind].append(
                            pa.nulls(size, pa.string())
                            if default is None
                            else pa.array(np.full(size, default, object), pa.string())
                        )
                    elif default:
                        values = cols[pos]
                        pieces[kind].append(pc.if_else(pc.equal(values, ""), default, values))
                    else:
                        pieces[kind].append(cols[pos])

    def _typed(self, fmt: DateFormat, problems: _Problems) -> dict[str, dict[str, pa.Array]]:
        """table -> column -> converted array. A kind's block is converted in one call; only
        when that fails, column by column, and only a failing column value by value."""
        out: dict[str, dict[str, pa.Array]] = {b.spec.name: {} for b in self.buffers}
        specs = {b.spec.name: b.spec for b in self.buffers}
        for kind in _KIND_ORDER:
            block = self.blocks[kind]
            if len(block) == 0:
                continue
            try:
                typed = _convert_block(kind, block, fmt)
            except (pa.ArrowInvalid, DateParseError):
                typed = None
            offset = 0
            for i, name, n in self.layout[kind]:
                column = specs[name].columns[i]
                if typed is not None:
                    out[name][column.name] = typed.slice(offset, n)
                else:
                    values = block.slice(offset, n)
                    out[name][column.name] = self._column(kind, values, fmt, name, i, problems)
                offset += n
        return out

    def _column(
        self,
        kind: str,
        values: pa.Array,
        fmt: DateFormat,
        table: str,
        index: int,
        problems: _Problems,
    ) -> pa.Array:
        try:
            return _convert_block(kind, values, fmt)
        except (pa.ArrowInvalid, DateParseError):
            pass
        typed, bad = _convert_tolerant(kind, values, fmt)
        if bad:
            column = TABLES[table].columns[index]
            firsts, plans = self.plans[table]
            attributes = [
                plans[bisect_right(firsts, row) - 1].attributes[index] or column.name
                for row, _, _ in bad
            ]
            problems.add(table, column, bad, attributes)
            raw = self.raw_extra.setdefault(table, [])
            raw.extend(
                (row, attribute, value)
                for (row, value, _), attribute in zip(bad, attributes, strict=True)
            )
        return typed

    def convert(
        self, fmt: DateFormat, accounts: pa.Array, problems: _Problems
    ) -> dict[str, pa.Table]:
        typed = self._typed(fmt, problems)
        for name, raw in self.raw_extra.items():
            self.extra[name] = _add_to_extra(self.extra[name], raw)
        return {
            b.spec.name: _assemble(b.spec, typed[b.spec.name], self, accounts) for b in self.buffers
        }


def _add_to_extra(extra: pa.Array, raw: list[tuple[int, str, str]]) -> pa.Array:
    """``extra`` maps with each (row, attribute, raw text) added."""
    maps = extra.to_pylist()
    for row, attribute, value in raw:
        maps[row].append((attribute, value))
    return pa.array(maps, EXTRA_TYPE)


def _convert_block(kind: str, block: pa.Array, fmt: DateFormat) -> pa.Array:
    """Strings (nulls already nulled) -> the kind's Arrow type; raises ArrowInvalid/DateParseError."""
    if kind == "str":
        return block
    if kind == "dec":
        try:
            return pc.cast(block, DECIMAL)
        except pa.ArrowInvalid:  # thousands separators, which IBKR does not normally write
            return pc.cast(pc.replace_substring(block, ",", ""), DECIMAL)
    if kind == "int":
        return pc.cast(block, pa.int64())
    if kind == "ts":
        return to_utc_timestamp(block, fmt)
    encoded = pc.dictionary_encode(block)  # dates repeat a lot: convert each distinct value once
    dictionary = _date_part(encoded.dictionary, fmt) if kind == "day" else encoded.dictionary
    return to_date32(dictionary, fmt).take(encoded.indices)


def _date_part(values: pa.Array, fmt: DateFormat) -> pa.Array:
    """``day`` values: the date of a date-time in ``fmt`` (time and zone dropped); others as is."""
    return pc.replace_substring_regex(values, rf"^({fmt.pattern}){_TIME_ZONE}$", r"\1")


def _convert_tolerant(
    kind: str, values: pa.Array, fmt: DateFormat
) -> tuple[pa.Array, list[tuple[int, str, str]]]:
    """Like :func:`_convert_block`, but a value that does not convert is null: returns the array
    and ``(index, raw value, problem)`` of each such value."""
    if kind == "ts":
        return to_utc_timestamp_tolerant(values, fmt)
    if kind == "date":
        return to_date32_tolerant(values, fmt)
    if kind == "day":  # also a date-time in another format: drop any time after a separator
        dates = pc.replace_substring_regex(_date_part(values, fmt), rf"[;, T]+{_TIME_ZONE}$", "")
        typed, bad = to_date32_tolerant(dates, fmt)
        raw = values.to_pylist() if bad else []
        return typed, [(i, raw[i], problem) for i, _, problem in bad]
    target = DECIMAL if kind == "dec" else pa.int64()
    clean = pc.replace_substring(values, ",", "") if kind == "dec" else values
    plain = pc.fill_null(
        pc.match_substring_regex(clean, _DEC_PLAIN if kind == "dec" else _INT_PLAIN), False
    )
    typed = pc.cast(pc.if_else(plain, clean, _NULL_STR), target)
    rest = pc.and_(values.is_valid(), pc.invert(plain))
    at = np.flatnonzero(rest.to_numpy(zero_copy_only=False))
    if len(at) == 0:
        return typed, []
    fixed, bad = [], []
    for i, value, cleaned in zip(
        at.tolist(),
        values.take(pa.array(at)).to_pylist(),
        clean.take(pa.array(at)).to_pylist(),
        strict=True,
    ):
        try:  # forms the plain pattern does not cover, e.g. "1E+5", ".5", "1.50000000000"
            fixed.append(pc.cast(pa.array([cleaned]), target)[0].as_py())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            fixed.append(None)
            bad.append(
                (i, value, _decimal_problem(value) if kind == "dec" else "is not an integer")
            )
    return pc.replace_with_mask(typed, rest, pa.array(fixed, target)), bad


def _decimal_problem(value: str) -> str:
    try:
        d = Decimal(value.replace(",", ""))
    except InvalidOperation:
        return "is not a number"
    if not d.is_finite():
        return "is not a finite number"
    if d.as_tuple().exponent < -10:
        return "has more than 10 decimal places; decimal128(38, 10) would lose digits"
    return "has more than 28 integer digits"


def _assemble(spec: TableSpec, cols: dict, staged: _Staged, accounts: pa.Array) -> pa.Table:
    """One table of the spec's schema plus ``__stmt`` (``statement_sha256`` still null, ``date``
    null where the row has no date of its own: the statement context comes in ``_finish``)."""
    n = staged.n[spec.name]
    stmt_np = staged.statements[spec.name]
    stmt = pa.array(stmt_np.astype(np.int32))
    cols["account_id"] = pc.coalesce(cols["account_id"], accounts.take(stmt))
    _check_account_ids(spec, cols["account_id"])
    cols["date"] = (
        pc.coalesce(*(cols[c] for c in spec.date_from))
        if spec.date_from
        else (pa.nulls(n, pa.date32()))
    )
    fix = _FIXUPS.get(spec.name)
    if fix is not None:
        fix(cols)
    cols["statement_sha256"] = pa.nulls(n, pa.string())
    cols["extra"] = staged.extra[spec.name]
    cols[_STMT] = stmt
    schema = SCHEMAS[spec.name].append(pa.field(_STMT, pa.int32()))
    table = pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)
    order = staged.order[spec.name]
    if order is not None:
        table = table.take(pa.array(order))
    return table


def _check_account_ids(spec: TableSpec, account_ids: pa.Array) -> None:
    """Raise FlexParseError naming the first unsafe account id of a row (checked per distinct id)."""
    ids = pc.unique(account_ids)
    safe = pc.and_(
        pc.match_substring_regex(ids, ACCOUNT_ID_SAFE), pc.invert(pc.match_substring(ids, ".."))
    )
    if pc.all(safe).as_py() is False:
        bad = ids.filter(pc.invert(safe))[0].as_py()
        where = f"<{spec.section}>" if spec.section else "the statement"
        raise FlexParseError(
            f"unsafe account id {bad!r} in the accountId of a {'/'.join(spec.row_tags)} row of "
            f"{where} (table {spec.name}): an account id names files, SQL literals and Dagster "
            "partitions: 1-64 letters, digits, '_', '-', '*' or '.', no '..'"
        )


def _finish(name: str, table: pa.Table, ctx: _StatementColumns) -> pa.Table:
    """Apply the statement context (effective period, base currency) and drop ``__stmt``."""
    stmt = table[_STMT]
    cols = {f.name: table[f.name] for f in table.schema}
    cols["date"] = pc.coalesce(cols["date"], ctx.to_date.take(stmt))
    fix = _CONTEXT_FIXUPS.get(name)
    if fix is not None:
        fix(cols, ctx, stmt)
    schema = SCHEMAS[name]
    out = pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)
    if name == "account_info":
        return _expand_days(out, stmt.to_numpy(), ctx)
    return out


def _fill_base_currency(cols: dict, ctx: _StatementColumns, stmt: pa.ChunkedArray) -> None:
    cols["base_currency"] = pc.coalesce(cols["base_currency"], ctx.base_currency.take(stmt))


def _fill_period(cols: dict, ctx: _StatementColumns, stmt: pa.ChunkedArray) -> None:
    cols["from_date"] = pc.coalesce(cols["from_date"], ctx.from_date.take(stmt))
    cols["to_date"] = pc.coalesce(cols["to_date"], ctx.to_date.take(stmt))


def _fix_change_in_nav(cols: dict, ctx: _StatementColumns, stmt: pa.ChunkedArray) -> None:
    _fill_base_currency(cols, ctx, stmt)
    _fill_period(cols, ctx, stmt)


def _level_by_currency(cols: dict) -> None:
    """A missing level_of_detail: BaseCurrency on the BASE_SUMMARY row, else Currency."""
    is_base = pc.fill_null(pc.equal(cols["currency"], "BASE_SUMMARY"), False)
    default = pc.if_else(is_base, "BaseCurrency", "Currency")
    cols["level_of_detail"] = pc.coalesce(cols["level_of_detail"], default)


def _fix_cash_balances(cols: dict) -> None:
    _level_by_currency(cols)
    net = cols["deposits_withdrawals"]
    only_net = pc.and_(
        pc.and_(pc.is_null(cols["deposits"]), pc.is_null(cols["withdrawals"])), pc.is_valid(net)
    )
    if pc.any(only_net).as_py():
        zero = pa.scalar(Decimal(0), DECIMAL)
        positive = pc.greater_equal(net, zero)
        cols["deposits"] = pc.if_else(only_net, pc.if_else(positive, net, zero), cols["deposits"])
        cols["withdrawals"] = pc.if_else(
            only_net, pc.if_else(positive, zero, net), cols["withdrawals"]
        )


def _fix_fx_rates(cols: dict) -> None:
    rate = cols["rate"]
    missing = pc.fill_null(pc.equal(rate, pa.scalar(Decimal(-1), DECIMAL)), False)
    cols["rate"] = pc.if_else(missing, pa.scalar(None, DECIMAL), rate)


_FIXUPS = {  # at flush
    "cash_balances": _fix_cash_balances,
    "fx_rates": _fix_fx_rates,
    "interest_accruals": _level_by_currency,
}
_CONTEXT_FIXUPS = {  # in _finish, with the statement context
    "nav_daily": _fill_base_currency,
    "change_in_nav": _fix_change_in_nav,
    "cash_balances": _fill_period,
    "interest_accruals": _fill_period,
    "fifo_performance": _fill_period,
    "mtm_performance": _fill_period,
}


def _expand_days(table: pa.Table, stmt: np.ndarray, ctx: _StatementColumns) -> pa.Table:
    """One AccountInformation row per calendar day of its statement's effective period."""
    first = ctx.from_date.cast(pa.int32()).to_numpy(zero_copy_only=False)[stmt]
    last = ctx.to_date.cast(pa.int32()).to_numpy(zero_copy_only=False)[stmt]
    n_days = last - first + 1
    rows = np.repeat(np.arange(len(stmt)), n_days)
    offsets = np.arange(len(rows)) - np.repeat(np.cumsum(n_days) - n_days, n_days)
    days = pa.array((first[rows] + offsets).astype(np.int32)).cast(pa.date32())
    out = table.take(pa.array(rows))
    i = out.schema.get_field_index("date")
    return out.set_column(i, out.schema.field(i), days)


# -- entry points ---------------------------------------------------------------------------------


def _chunks(data: bytes | bytearray | memoryview | str | os.PathLike) -> Iterator[bytes]:
    if isinstance(data, bytes | bytearray | memoryview):
        view = bytes(data) if not isinstance(data, bytes) else data
        for i in range(0, len(view), CHUNK_BYTES):
            yield view[i : i + CHUNK_BYTES]
        return
    with open(data, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            yield chunk


def _scan_blocks(data: bytes | str | os.PathLike) -> Iterator[memoryview]:
    """The document in blocks of about :data:`SCAN_CHUNK_BYTES`, each cut just before a ``<``."""
    return blocks(data, SCAN_CHUNK_BYTES)


class _ScanFeeder:
    """Walks the scanned chunks' elements into a :class:`_Target`: each element that is not a row
    (root, statements, sections, single-row sections) through its callbacks, each run of row
    elements in bulk. Checks the nesting of tags as it goes (the scanner checked the rest)."""

    def __init__(self, target: _Target) -> None:
        self.target = target
        self.stack: list[str] = []
        self.root_seen = False

    def feed(self, scan: ChunkScan, first_chunk: bool) -> None:
        target = self.target
        target.scan = scan
        depth = scan.depth(len(self.stack))
        row = (depth == _ROW_DEPTH) & scan.self_closing & (scan.kind == HEAD)
        tag_of, tags = scan.tag_ids
        previous = 0
        for s in [*np.flatnonzero(~row).tolist(), len(row)]:
            if s > previous:
                self._rows(np.arange(previous, s), tag_of, tags)
            previous = s + 1
            if s < len(row):
                self._element(scan, s, first_chunk)
        target.materialize()
        target.scan = None

    def _element(self, scan: ChunkScan, s: int, first_chunk: bool) -> None:
        target, tag = self.target, scan.tag(s)
        if scan.kind[s] == DECL_HEAD:
            scan.check_declaration(s)
            return
        if scan.closing[s]:
            if not self.stack or self.stack[-1] != tag:
                raise IrregularXml(f"</{tag}> does not close the open element")
            self.stack.pop()
            target.end(tag)
            return
        if not self.stack:
            if self.root_seen:
                raise IrregularXml("content after the root element")
            self.root_seen = True
        buf = target.container
        if target.depth == _ROW_DEPTH and buf is not None and tag in buf.plans:
            raise IrregularXml(f"<{tag}> row that is not an empty element with attributes")
        target.start(tag, scan.attributes(s))
        if scan.self_closing[s]:
            target.end(tag)
        else:
            self.stack.append(tag)

    def _rows(self, rows: np.ndarray, tag_of: np.ndarray, tags: list[str]) -> None:
        target = self.target
        buf = target.container
        if buf is None:
            if target.skip_depth == _ROW_DEPTH - 1:
                target.skip_children += len(rows)
            return
        known = np.fromiter((t in buf.plans for t in tags), bool, len(tags))
        row_known = known[tag_of[rows]]
        if not row_known.all():
            for t, count in Counter(tag_of[rows[~row_known]].tolist()).items():
                key = f"{target.container_tag}/{tags[t]}"
                target.skipped[key] += count
                target.skipped_rows[key] += count
            rows = rows[row_known]
        while len(rows):
            room = FLUSH_ROWS - target.buffered
            buf.pending.append((rows[:room], target.statement))
            target.buffered += len(rows[:room])
            rows = rows[room:]
            if target.buffered >= FLUSH_ROWS:
                target.flush()

    def close(self) -> None:
        if self.stack or not self.root_seen:
            raise IrregularXml("document ends inside an element, or has no root")


def _parse_scanned(data: bytes | str | os.PathLike, source_sha256: str | None) -> ParsedFlex:
    """:func:`parse_statement` by the vectorized scanner; IrregularXml when the bytes are not in
    its regular shape (nothing is returned then)."""
    hasher = hashlib.sha256() if source_sha256 is None else None
    target = _Target()
    feeder = _ScanFeeder(target)
    first = True
    for block in _scan_blocks(data):
        if hasher is not None:
            hasher.update(block)
        if first and block[:3] == BOM:  # a UTF-8 byte order mark, as libxml2 skips
            block = block[3:]
        feeder.feed(ChunkScan(block, first), first)
        first = False
    if first:
        raise IrregularXml("empty input")
    feeder.close()
    return target.result(source_sha256 or hasher.hexdigest())


def parse_statement(
    data: bytes | bytearray | memoryview | str | os.PathLike, *, source_sha256: str | None = None
) -> ParsedFlex:
    """Parse an Activity Flex XML response (bytes, or a path to read in chunks).

    ``source_sha256`` goes into every row's ``statement_sha256``; when None it is computed from the
    bytes. Raises FlexParseError for empty, invalid or truncated XML, a root other than
    ``FlexQueryResponse``, undetectable date formats, or a value that does not fit its column.

    Bytes in the regular shape IBKR writes are read by the vectorized scanner
    (:mod:`ibpipeline.flex.scan`); any other XML, and every error, by lxml with a parser target.
    Both give the same tables (``tests/flex/test_scan.py`` holds them equal on every fixture).
    """
    if isinstance(data, bytes | str | os.PathLike):
        try:
            return _parse_scanned(data, source_sha256)
        except IrregularXml:
            pass
    return parse_with_lxml(data, source_sha256=source_sha256)


def parse_with_lxml(
    data: bytes | bytearray | memoryview | str | os.PathLike, *, source_sha256: str | None = None
) -> ParsedFlex:
    """:func:`parse_statement` by lxml with a parser target (any XML; XML errors reported)."""
    hasher = hashlib.sha256() if source_sha256 is None else None
    target = _Target()
    for _ in _feed_lxml(target, data, hasher):
        pass
    return target.result(source_sha256 or hasher.hexdigest())


def _feed_lxml(
    target: _Target,
    data: bytes | bytearray | memoryview | str | os.PathLike,
    hasher: hashlib._Hash | None,
) -> Iterator[None]:
    """Feed ``data`` to lxml with ``target`` in chunks (each also to ``hasher`` unless None),
    yielding after each; raises FlexParseError for empty input and XML errors."""
    parser = etree.XMLParser(
        target=target, huge_tree=True, resolve_entities="internal", no_network=True
    )
    size = 0
    try:
        for chunk in _chunks(data):
            size += len(chunk)
            if hasher is not None:
                hasher.update(chunk)
            parser.feed(chunk)
            yield
        if size == 0:
            raise FlexParseError("empty input: 0 bytes")
        parser.close()
    except etree.XMLSyntaxError as exc:
        line, column = exc.position if exc.position else (0, 0)
        raise FlexParseError(
            f"invalid or truncated Flex XML at line {line}, column {column} "
            f"({size} bytes read): {exc.msg}"
        ) from None


PART_ROWS = 50_000
"""Rows after which :class:`StatementParts` ends a part (at the next change of account)."""


class StatementParts:
    """:func:`parse_statement` of a file in parts, for documents too large to hold parsed whole.

    Iterating yields :class:`ParsedFlex` parts, each holding consecutive whole FlexStatements
    (every statement of an account in one part: a part ends at the first change of account after
    ``part_rows`` rows), with those statements' rows, problems and warnings; the last part also
    carries the document-level warnings, ``skipped`` and ``skipped_rows``. The parts' tables
    concatenated are the whole document's, row for row. Memory: one part's rows and one read
    block, whatever the document's size.

    Every row's ``statement_sha256`` is ``source_sha256``; after the iteration ``digest`` is the
    SHA-256 of the bytes read (check it against ``source_sha256``). Raises FlexParseError as
    :func:`parse_statement` does, possibly after some parts were handed out, and
    AccountSplitError when an account's statements are not consecutive (parse it whole then).
    """

    def __init__(
        self, path: str | os.PathLike, source_sha256: str, part_rows: int | None = None
    ) -> None:
        self.path, self.source_sha256 = path, source_sha256
        self.part_rows = PART_ROWS if part_rows is None else part_rows
        self.digest: str | None = None

    def _target(self, resume_at: int | None) -> _Target:
        target = _Target()
        target.part_rows, target.resume_at, target.sha256 = (
            self.part_rows,
            resume_at,
            self.source_sha256,
        )
        return target

    def __iter__(self) -> Iterator[ParsedFlex]:
        handed = 0  # statements handed out
        try:
            for part, _ in self._scanned():
                handed += len(part.statements)
                yield part
            return
        except IrregularXml:
            pass
        # lxml from the start: the parts of the statements already handed out are dropped (a
        # part ends where the scanner's last one did), not the last part
        seen = 0
        for part, final in self._with_lxml(handed or None):
            seen += len(part.statements)
            if seen > handed or final:
                yield part

    def _scanned(self) -> Iterator[tuple[ParsedFlex, bool]]:
        hasher, target = hashlib.sha256(), self._target(None)
        feeder = _ScanFeeder(target)
        first = True
        for block in _scan_blocks(self.path):
            hasher.update(block)
            if first and block[:3] == BOM:
                block = block[3:]
            feeder.feed(ChunkScan(block, first), first)
            first = False
            yield from _drain(target)
        if first:
            raise IrregularXml("empty input")
        feeder.close()
        self.digest = hasher.hexdigest()
        yield target.result(self.source_sha256), True

    def _with_lxml(self, resume_at: int | None) -> Iterator[tuple[ParsedFlex, bool]]:
        hasher, target = hashlib.sha256(), self._target(resume_at)
        for _ in _feed_lxml(target, self.path, hasher):
            yield from _drain(target)
        yield from _drain(target)  # parts the parser's close finished, if any
        self.digest = hasher.hexdigest()
        yield target.result(self.source_sha256), True


def _drain(target: _Target) -> Iterator[tuple[ParsedFlex, bool]]:
    """The parts ``target`` finished so far (handed out once; none is the last)."""
    while target.parts:
        yield target.parts.pop(0), False


def parse_to_parquet(
    paths: Iterable[str | os.PathLike], out_dir: str | os.PathLike
) -> dict[str, int]:
    """Parse each Flex file and write ``out_dir/<table>/<file stem>.parquet`` per non-empty table.

    Files are replaced atomically. Returns the number of rows written per table (every table name,
    0 when no file had rows for it).
    """
    out = Path(out_dir)
    totals = dict.fromkeys(TABLES, 0)
    for path in map(Path, paths):
        parsed = parse_statement(path)
        for name, table in parsed.tables.items():
            if table.num_rows == 0:
                continue
            target = out / name / f"{path.stem}.parquet"
            atomic_write_with(target, lambda tmp, t=table: pq.write_table(t, tmp))
            totals[name] += table.num_rows
    return totals
