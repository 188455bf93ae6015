"""Normalized Flex tables: one ``@multi_asset`` over report dates, parsing each statement once.

Partitioned by ``daily`` like ``raw_flex_statement``, so raw and normalized run in one job and a
backfill of any range is one run. For the run's report dates the asset reads the per-date
manifests (which statement supplies each account of the day), parses each statement once,
reconstructs daily positions, and replaces every (table, date) file with all accounts' rows of
that date (an empty file when the day has no rows).

With several Flex queries (``build_normalized_flex``) the same assets are a graph: one
``normalize_<query>`` step per query parses only its query's statements and stages their rows,
then ``write_tables`` writes the same day files from them and materializes the assets.
"""

import contextlib
import shutil
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc  # noqa: F401  (pa.ipc)

from ibpipeline.assets.raw import days_in, raw_flex_statement
from ibpipeline.flex.parse import AccountSplitError, ParsedFlex, StatementParts, parse_statement
from ibpipeline.flex.positions import reconstruct_daily_positions, unpriced_warnings
from ibpipeline.flex.queries import FlexQuery
from ibpipeline.memory import release_memory
from ibpipeline.partitions import daily
from ibpipeline.resources import DataDirResource
from ibpipeline.storage import parquet, rawstore
from ibpipeline.storage.spill import Spill, SpilledRows, spill_folder

PARSED_TABLES: tuple[str, ...] = (
    "account_info",
    "nav_daily",
    "change_in_nav",
    "cash_balances",
    "trades",
    "cash_transactions",
    "fx_rates",
    "corporate_actions",
    "transfers",
    "option_events",
    "interest_accruals",
    "dividend_accruals",
    "securities",
    "statement_of_funds",
    "fifo_performance",
    "mtm_performance",
    "fees",
    "stock_grants",
    "fx_transactions",
)
NORMALIZED_TABLES: tuple[str, ...] = (*PARSED_TABLES[:4], "positions_daily", *PARSED_TABLES[4:])
PREVIEW_ROWS = 5
PARSE_CHECK = "parse_warnings"


class MissingRawStatementError(Exception):
    """A selected report date has no raw statement manifest (fetch it first)."""


def manifests_for(data_dir: Path, days: Iterable[date]) -> dict[date, rawstore.DayManifest]:
    """The manifest of every day; raises MissingRawStatementError naming all days without one."""
    found, missing = {}, []
    for day in sorted(set(days)):
        manifest = rawstore.read_manifest(data_dir, day)
        if manifest is None:
            missing.append(day)
        else:
            found[day] = manifest
    if missing:
        listed = ", ".join(d.isoformat() for d in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise MissingRawStatementError(
            f"no raw Flex statement for report date(s) {listed}{more}: materialize "
            f"raw_flex_statement for {missing[0]}..{missing[-1]} first"
        )
    return found


def _groups(
    table: pa.Table, columns: Sequence[str], wanted: Collection[tuple]
) -> tuple[pa.Array, list[tuple[tuple, int, int]]]:
    """Row numbers of ``table`` ordered by the values of ``columns`` (row order kept inside equal
    values), and each ``wanted`` group as ``(key, start, length)`` in that order."""
    keys = {f"k{i}": table[c] for i, c in enumerate(columns)}
    order = pc.sort_indices(
        pa.table({**keys, "i": pa.array(range(table.num_rows))}),
        sort_keys=[(k, "ascending") for k in (*keys, "i")],
    )
    values = list(zip(*(table[c].take(order).to_pylist() for c in columns), strict=True))
    out = []
    start = 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            if values[start] in wanted:
                out.append((values[start], start, i - start))
            start = i
    return order, out


def split_by(
    table: pa.Table, columns: Sequence[str], wanted: Collection[tuple]
) -> dict[tuple, pa.Table]:
    """Rows of ``table`` grouped by the values of ``columns`` (keys are tuples of them), keeping
    only the ``wanted`` groups. Row order inside a group is preserved."""
    if table.num_rows == 0 or not wanted:
        return {}
    order, groups = _groups(table, columns, wanted)
    ordered = table.take(order)
    return {key: ordered.slice(start, n) for key, start, n in groups}


class _Grouped:
    """A table and the row order grouping it, reordered (one copy) when first used; the table
    itself is let go then. The groups of one table share it."""

    def __init__(self, table: pa.Table, order: pa.Array) -> None:
        self._table: pa.Table | None = table
        self._order: pa.Array | None = order
        self._ordered: pa.Table | None = None

    def slice(self, start: int, length: int) -> pa.Table:
        if self._ordered is None:
            self._ordered = self._table.take(self._order)
            self._table = self._order = None
        return self._ordered.slice(start, length)


@dataclass(frozen=True)
class Rows:
    """One group of a table's rows (``split_rows``), taken when needed (``take``): the groups of
    a table cost nothing until the first is taken, then share one reordered copy of the table
    (a slice each), so a caller that takes one table's groups at a time and then drops them holds
    one table's copy at a time. (Taking each group from the unordered table instead costs a
    concatenation of a chunked table's columns per group: 6x slower on positions_daily.)"""

    grouped: _Grouped
    start: int
    length: int

    def take(self) -> pa.Table:
        return self.grouped.slice(self.start, self.length)


def split_rows(
    table: pa.Table, columns: Sequence[str], wanted: Collection[tuple]
) -> dict[tuple, Rows]:
    """``split_by`` deferred: each wanted group's rows as :class:`Rows` of ``table``
    (``Rows.take()`` is that group of ``split_by``)."""
    if table.num_rows == 0 or not wanted:
        return {}
    order, groups = _groups(table, columns, wanted)
    grouped = _Grouped(table, order)
    return {key: Rows(grouped, start, n) for key, start, n in groups}


def parsed_tables(parsed: ParsedFlex) -> dict[str, pa.Table]:
    """Every normalized table of a parsed statement (positions reconstructed per day)."""
    tables = {name: parsed.tables[name] for name in PARSED_TABLES}
    tables["positions_daily"] = reconstruct_daily_positions(parsed)
    return tables


@dataclass(frozen=True)
class TableWarning:
    """One parse warning of a statement, filed under the normalized table it concerns: ``line``
    names the statement; ``values`` is how many values it stands for (the values of a column
    that did not convert; 1 for a statement-level warning)."""

    table: str
    line: str
    values: int = 1


def statement_label(sha256: str) -> str:
    """How warning lines name a stored statement."""
    return f"statement {sha256[:12]}"


def statement_problems(parsed: ParsedFlex, positions: pa.Table | None = None) -> list[TableWarning]:
    """Every parse warning of a statement: value problems under their table, statement-level
    warnings (count, period, date format, skipped sections) under ``account_info``, and, given
    the statement's reconstructed ``positions`` (``positions_daily``), its unpriced rows under
    ``positions_daily`` (one warning per account, standing for its unpriced rows)."""
    label = statement_label(parsed.source_sha256)
    lines = {p.line() for p in parsed.problems}
    out = [TableWarning(p.table, f"{label}: {p.line()}", p.count) for p in parsed.problems]
    out += [
        TableWarning("account_info", f"{label}: {w}") for w in parsed.warnings if w not in lines
    ]
    if positions is not None:
        out += [
            TableWarning("positions_daily", f"{label}: {line}", rows)
            for line, rows in unpriced_warnings(positions)
        ]
    return out


def _warning_sample(mine: Sequence[TableWarning]) -> dg.MetadataValue:
    return dg.MetadataValue.md("\n".join(f"- {w.line}" for w in mine[:PREVIEW_ROWS]) or "-")


def parse_warning_metadata(mine: Sequence[TableWarning]) -> dict[str, object]:
    """Materialization metadata of a table's parse warnings (``mine``): ``parse_warnings`` (the
    values they stand for) and, when there are any, ``parse_warning_sample``."""
    metadata: dict[str, object] = {"parse_warnings": sum(w.values for w in mine)}
    if mine:
        metadata["parse_warning_sample"] = _warning_sample(mine)
    return metadata


def parse_check_fields(mine: Sequence[TableWarning]) -> dict[str, object]:
    """The ``parse_warnings`` check of a table with these warnings (keyword arguments of
    ``AssetCheckResult`` / ``AssetCheckEvaluation``): WARN, failing when there are any."""
    return {
        "check_name": PARSE_CHECK,
        "passed": not mine,
        "severity": dg.AssetCheckSeverity.WARN,
        "metadata": {
            "parse_warnings": sum(w.values for w in mine),
            "sample": _warning_sample(mine),
        },
    }


def preview_markdown(table: pa.Table, rows: int = PREVIEW_ROWS) -> str:
    """A Markdown table of the first ``rows`` rows (values via ``str``)."""
    head = table.slice(0, rows).to_pylist()
    names = table.column_names
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(str(r[n]) for n in names) + " |" for r in head]
    return "\n".join(lines)


def column_description(f: pa.Field) -> str | None:
    """A field's ``doc`` and ``unit`` metadata (docs/tables.md) as one description."""
    meta = {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
    parts = [meta.get("doc", ""), f"unit: {meta['unit']}" if meta.get("unit") else ""]
    parts.append(f"Flex attribute {meta['flex']}" if meta.get("flex") else "")
    return "; ".join(p for p in parts if p) or None


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    """Dagster column schema of an Arrow schema, with each column's description and unit."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(f.name, str(f.type), description=column_description(f)) for f in schema
        ]
    )


@dataclass
class DayStats:
    """What one run wrote for one table and day: rows, rows per account, a preview (a copy of
    the first :data:`PREVIEW_ROWS` rows)."""

    rows: int = 0
    rows_by_account: dict[str, int] = field(default_factory=dict)
    preview: pa.Table | None = None


@dataclass
class TableStats:
    """What one run wrote for one table: rows, day files, rows per account, schema, a preview,
    and the same per day (``by_day``, for each partition's own materialization metadata)."""

    rows: int = 0
    days: int = 0
    rows_by_account: dict[str, int] = field(default_factory=dict)
    schema: pa.Schema | None = None
    preview: pa.Table | None = None
    by_day: dict[date, DayStats] = field(default_factory=dict)

    def add(self, table: pa.Table, day: date | None = None) -> None:
        self.rows += table.num_rows
        self.days += 1
        self.schema = self.schema or table.schema
        mine = DayStats(rows=table.num_rows)
        if table.num_rows:
            counts = pc.value_counts(table["account_id"]).to_pylist()
            for item in counts:
                account, n = item["values"], item["counts"]
                self.rows_by_account[account] = self.rows_by_account.get(account, 0) + n
                mine.rows_by_account[account] = n
            # a copy of the first rows: a slice would keep the whole day's rows alive
            mine.preview = table.take(pa.array(range(min(PREVIEW_ROWS, table.num_rows))))
            if self.preview is None:
                self.preview = mine.preview
        if day is not None:
            self.by_day[day] = mine


def _accounts(table: pa.Table) -> set[str]:
    return set(pc.unique(table["account_id"]).to_pylist()) if table.num_rows else set()


def parse_stored(data_dir: Path, sha256: str) -> ParsedFlex:
    """Parse the stored statement ``sha256`` from its file, read in chunks (its bytes are never
    all in memory) and hashed as read. Raises RawStoreError (as ``rawstore.read_statement``) when
    it is missing or its bytes do not hash to ``sha256``, also when they do not parse."""
    path = rawstore.stored_statement(data_dir, sha256)
    try:
        flex = parse_statement(path)
    except Exception as exc:
        rawstore.verify_statement(data_dir, sha256)  # a corrupt file is the store's error
        raise exc from None
    rawstore.verify_statement(data_dir, sha256, digest=flex.source_sha256)
    return flex


SPILL_BYTES = 64 << 20
"""A stored statement of at least this many bytes is parsed in parts of whole accounts
(``StatementParts``) and its rows of the run's days wait on disk (``Spill``) until their day
files are written: memory is bounded by one part and one (table, day), not by the statement (a
year of 100 accounts is ~300 MB of XML). Smaller statements (a daily run's) stay in memory."""
ACCOUNT_SORTED = {"positions_daily": ("account_id",)}
"""Tables whose statement rows are sorted by these columns (``reconstruct_daily_positions``: by
account, then date and conid): a day's rows from several parts are sorted again (stably), so the
day file is the one a statement parsed whole gives, byte for byte."""


def _spill_statement(
    data_dir: Path,
    sha256: str,
    tables: Sequence[str],
    wanted: Collection[tuple],
    folder: Path,
) -> tuple[dict[str, dict[date, SpilledRows]], dict[str, pa.Schema], list[TableWarning]]:
    """``_parse_statements`` of one large statement, part by part (``StatementParts``): its rows
    of the ``wanted`` days go to a :class:`Spill` in ``folder``. Returns ``table -> day -> rows``,
    each table's schema and the statement's warnings. Raises AccountSplitError (nothing kept)
    when its accounts cannot be parsed apart, RawStoreError when the file is not the statement."""
    spill = Spill(folder, sort_keys=ACCOUNT_SORTED)
    parts = StatementParts(rawstore.stored_statement(data_dir, sha256), sha256)
    problems: list[TableWarning] = []
    try:
        for flex in parts:
            parsed = parsed_tables(flex)
            problems.extend(statement_problems(flex, parsed["positions_daily"]))
            del flex
            for name in tables:
                spill.schemas.setdefault(name, parsed[name].schema)
                for (day,), rows in split_rows(parsed[name], ("date",), wanted).items():
                    spill.add(name, day, rows.take())
            del parsed
        spill.finish()
    except AccountSplitError:
        spill.close()
        raise
    except Exception as exc:
        spill.close()
        rawstore.verify_statement(data_dir, sha256)  # a corrupt file is the store's error
        raise exc from None
    try:
        rawstore.verify_statement(data_dir, sha256, digest=parts.digest)
    except Exception:
        spill.close()
        raise
    release_memory()
    return {name: spill.rows(name) for name in tables}, dict(spill.schemas), problems


def _parse_statements(
    data_dir: Path,
    manifests: Mapping[date, rawstore.DayManifest],
    statements: Iterable[str],
    tables: Sequence[str],
    preparsed: Mapping[str, Mapping[str, pa.Table]] | None,
    problems: list[TableWarning] | None,
    spill_dir: Path | None = None,
) -> tuple[dict[str, dict[str, dict[date, Rows | SpilledRows]]], dict[str, pa.Schema]]:
    """``sha256 -> table -> day -> rows`` of the run's days for each of ``statements`` (each
    parsed once, only its rows of the days whose manifest lists it kept), and each table's schema.

    The rows are :class:`Rows` of the parsed tables (row numbers, no copy: a day's rows are
    taken when written). Memory: the statements' normalized tables (of the other parsed tables,
    such as OpenPositions, one statement's at a time). With ``spill_dir``, a statement of
    ``SPILL_BYTES`` or more is parsed in parts and its rows are :class:`SpilledRows` under it."""
    by_day: dict[str, dict[str, dict[date, Rows | SpilledRows]]] = {}
    schemas: dict[str, pa.Schema] = {}
    for sha256 in statements:
        wanted = {
            (d,) for d, m in manifests.items() if any(e.sha256 == sha256 for e in m.statements)
        }
        if (
            spill_dir is not None
            and (preparsed is None or sha256 not in preparsed)
            and rawstore.stored_statement(data_dir, sha256).stat().st_size >= SPILL_BYTES
        ):
            try:
                spilled, found, mine = _spill_statement(
                    data_dir, sha256, tables, wanted, spill_dir / sha256[:16]
                )
            except AccountSplitError:
                pass  # an account's statements apart: parsed whole below
            else:
                by_day[sha256] = spilled
                for name, schema in found.items():
                    schemas.setdefault(name, schema)
                if problems is not None:
                    problems.extend(mine)
                continue
        if preparsed is not None and sha256 in preparsed:
            parsed = dict(preparsed[sha256])
        else:
            flex = parse_stored(data_dir, sha256)
            parsed = parsed_tables(flex)
            if problems is not None:
                problems.extend(statement_problems(flex, parsed["positions_daily"]))
            del flex  # its other tables (OpenPositions, PriorPeriodPositions, ...) go now
        by_day[sha256] = {}
        for name in tables:
            table = parsed[name]
            schemas.setdefault(name, table.schema)
            by_day[sha256][name] = {
                day: part for (day,), part in split_rows(table, ("date",), wanted).items()
            }
        del parsed, table  # the tables not selected go now
    return by_day, schemas


def _day_rows(
    name: str,
    day: date,
    manifest: rawstore.DayManifest,
    by_day: Mapping[str, Mapping[str, Mapping[date, Rows | SpilledRows]]],
) -> pa.Table | None:
    """The ``name`` rows of ``day`` that the statements of ``by_day`` supply (per account, the
    supplier of ``manifest``), in the manifest's statement order; None when there are none.

    ``by_day`` may hold only some of the day's statements (one query's): an account whose rows
    another statement supplies is left out. Their unparsed statements change no supplier, since
    a whole-statement entry only leaves out an account its rows hold when another entry of the
    day claims that account (``Manifest.without``, ``DayManifest.yielding``).
    """
    taken = {sha: by_day[sha][name].get(day) for sha in by_day}
    rows = {sha: part.take() for sha, part in taken.items() if part is not None}
    present = {sha: _accounts(part) for sha, part in rows.items()}
    supplier = manifest.suppliers(name, present)
    pieces = []
    for sha in dict.fromkeys(m.sha256 for m in manifest.statements):
        part = rows.get(sha)
        if part is None:
            continue
        mine = sorted(a for a, s in supplier.items() if s == sha)
        if present[sha] - set(mine):
            part = part.filter(pc.is_in(part["account_id"], pa.array(mine, pa.string())))
        if part.num_rows:
            pieces.append(part)
    return pa.concat_tables(pieces, promote_options="default") if pieces else None


WRITE_THREADS = 4
"""Day files encoded and written at once: Parquet encoding, file writes and fsync release the
GIL, so a year's 7,300 files take about half the time on 2 cores."""


class DayWriter:
    """``parquet.write_day`` of many (table, day) files on ``WRITE_THREADS`` threads.

    ``write`` queues a file (at most ``2 * WRITE_THREADS`` pending: the tables are views of
    rows already in memory); ``wait`` returns when every queued file is written and raises the
    first failure (each file is replaced atomically, so a failed one keeps its previous
    content). Leaving the ``with`` block waits too."""

    def __init__(self, data_dir: Path, threads: int = WRITE_THREADS) -> None:
        self.data_dir = data_dir
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="write_day")
        self.limit = 2 * threads
        self.pending: list[Future] = []

    def write(self, name: str, day: date, table: pa.Table) -> None:
        if len(self.pending) >= self.limit:
            self.pending.pop(0).result()
        self.pending.append(
            self.pool.submit(parquet.write_day, name, day, table, data_dir=self.data_dir)
        )

    def wait(self) -> None:
        pending, self.pending = self.pending, []
        errors = [f.exception() for f in pending]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first

    def __enter__(self) -> "DayWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if exc_info[0] is None:
                self.wait()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


def normalize_days(
    data_dir: Path,
    days: Iterable[date],
    tables: Iterable[str],
    preparsed: Mapping[str, Mapping[str, pa.Table]] | None = None,
    changed: Mapping[date, Collection[str]] | None = None,
    problems: list[TableWarning] | None = None,
) -> dict[str, TableStats]:
    """Replace the (table, day) file of every selected table and day from the stored statements.

    ``changed`` (day -> tables) limits the rewrite to those files (an import rewrites only the
    tables it supplies; every other file of the day has the same suppliers as before).

    A day's file holds, for each account, that account's rows from the statement supplying them
    (``rawstore.DayManifest.suppliers``: the newest claim of the (table, account), else the newest
    fallback); an empty file with the schema when the day has no rows. Each statement is read and
    parsed once (``preparsed``: tables of statements already parsed, by sha256). Raises
    MissingRawStatementError before writing anything when a day has no manifest. ``problems``,
    when given, receives a ``TableWarning`` for every parse warning of the statements parsed
    here (table ``account_info`` for statement-level warnings; none for ``preparsed`` ones).
    """
    tables = tuple(tables)
    manifests = manifests_for(data_dir, days)
    needed = sorted({m.sha256 for manifest in manifests.values() for m in manifest.statements})
    stats = {name: TableStats() for name in tables}
    with spill_folder(data_dir) as spill_dir:
        by_day, schemas = _parse_statements(
            data_dir, manifests, needed, tables, preparsed, problems, spill_dir
        )
        with DayWriter(data_dir) as writer:
            for name in tables:
                for day, manifest in sorted(manifests.items()):
                    if changed is not None and name not in changed.get(day, ()):
                        continue
                    table = _day_rows(name, day, manifest, by_day)
                    if table is None:
                        table = schemas[name].empty_table()
                    writer.write(name, day, table)
                    stats[name].add(table, day)
                writer.wait()
                for parts in by_day.values():  # written: free this table's rows
                    parts.pop(name, None)
        del by_day
    release_memory()  # the next steps of this process start from a lower resident set
    return stats


# --- several Flex queries: one normalize step per query, then one step writing the day files ---

STAGING_DIR = Path("staging") / "normalized"
"""Under the data folder: ``<run id>/<query>/<table>/<day>.arrow``, the rows each query's step
found for each (table, day), until the writing step has put them into the day files."""


def statement_steps(
    manifests: Mapping[date, rawstore.DayManifest], queries: Sequence[str]
) -> dict[str, str]:
    """``sha256 -> query`` whose step normalizes each statement of the run's days: the query
    named in its manifest entries; a statement of no configured query (an inbox file, one fetched
    before ``IBKR_FLEX_QUERIES`` was set, a removed query) goes to the first query's step. Each
    statement goes to exactly one step, so each (table, day, account) is written by one step."""
    rank = {q: i for i, q in enumerate(queries)}
    out: dict[str, str] = {}
    for manifest in manifests.values():
        for m in manifest.statements:
            step = m.query if m.query in rank else queries[0]
            if m.sha256 not in out or rank[step] < rank[out[m.sha256]]:
                out[m.sha256] = step
    return out


STAGING_RETENTION = timedelta(days=7)
"""How long the staged rows of a run that ended without writing them (a failed or canceled run)
stay for a "re-execute from failure" of that run; older ones are removed by the next run."""


def prune_staging(
    data_dir: Path,
    run_ended: Callable[[str], bool],
    now: datetime | None = None,
    retention: timedelta = STAGING_RETENTION,
) -> list[str]:
    """Remove ``<data_dir>/staging/normalized/<run id>/`` of every run that has ended
    (``run_ended(run_id)``) when the folder was last written more than ``retention`` ago; a run
    still going, or one ended recently enough to be re-executed from failure, keeps its rows.
    Returns the run ids removed."""
    root = data_dir / STAGING_DIR
    if not root.is_dir():
        return []
    cutoff = (now or datetime.now(UTC)).timestamp() - retention.total_seconds()
    removed = []
    for folder in sorted(root.iterdir()):
        if not folder.is_dir():
            continue
        newest = max((p.stat().st_mtime for p in folder.rglob("*")), default=0.0)
        newest = max(newest, folder.stat().st_mtime)
        if newest < cutoff and run_ended(folder.name):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


class StagedRowsMissingError(Exception):
    """The rows a query's normalize step staged are no longer on disk."""


@dataclass(frozen=True)
class QueryRows:
    """What one query's normalize step staged: ``staged[table][day]`` rows (a file under
    ``stage_dir`` when > 0), each table's schema, the statements it parsed and their warnings."""

    query: str
    stage_dir: str
    statements: tuple[str, ...]
    staged: dict[str, dict[date, int]]
    schemas: dict[str, pa.Schema]
    problems: tuple[TableWarning, ...] = ()

    def path(self, table: str, day: date) -> Path:
        return Path(self.stage_dir) / table / f"{day.isoformat()}.arrow"


def normalize_query(
    data_dir: Path,
    days: Iterable[date],
    tables: Iterable[str],
    query: str,
    queries: Sequence[str],
    stage_dir: Path,
) -> QueryRows:
    """Parse only the statements of ``query`` (``statement_steps``) for the run's days and stage
    the rows they supply, per (table, day), as Arrow IPC files under ``stage_dir`` (replaced as a
    whole, so a retry stages the same). Writes no day file. Memory: this query's statements (one
    parsed at a time) and its rows of the range. Raises MissingRawStatementError when a day has
    no manifest."""
    tables = tuple(tables)
    manifests = manifests_for(data_dir, days)
    steps = statement_steps(manifests, queries)
    mine = sorted(sha for sha, step in steps.items() if step == query)
    problems: list[TableWarning] = []
    stage_dir = Path(stage_dir)
    staged: dict[str, dict[date, int]] = {}
    with spill_folder(data_dir) as spill_dir:
        by_day, schemas = _parse_statements(
            data_dir, manifests, mine, tables, None, problems, spill_dir
        )
        if stage_dir.exists():
            shutil.rmtree(stage_dir)
        for name in tables:
            staged[name] = {}
            for day, manifest in sorted(manifests.items()):
                table = _day_rows(name, day, manifest, by_day) if by_day else None
                if table is None:
                    continue
                path = stage_dir / name / f"{day.isoformat()}.arrow"
                path.parent.mkdir(parents=True, exist_ok=True)
                with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
                    w.write_table(table)
                staged[name][day] = table.num_rows
            for parts in by_day.values():  # staged: free this table's rows
                parts.pop(name, None)
        del by_day
    release_memory()
    return QueryRows(query, str(stage_dir), tuple(mine), staged, schemas, tuple(problems))


def _read_staged(path: Path) -> pa.Table:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def write_query_rows(
    data_dir: Path, days: Iterable[date], tables: Iterable[str], parts: Sequence[QueryRows]
) -> dict[str, TableStats]:
    """Replace every (table, day) file with the rows the query steps staged (a few (table, day)
    files in memory at a time: ``DayWriter``), in the layout of the single step
    (``parquet.write_day``: one file per table and day, every account, atomic), then delete the
    staged rows. Nothing is written unless
    every query's step succeeded, so a failing query never takes another query's rows away."""
    stats = {name: TableStats() for name in tables}
    for p in parts:  # before writing anything: a retry of this step alone after the staged
        # rows were deleted (they are, once written) must not write half of the days
        gone = [
            p.path(name, day) for name in stats for day, n in p.staged.get(name, {}).items() if n
        ]
        gone = [path for path in gone if not path.is_file()]
        if gone:
            raise StagedRowsMissingError(
                f"{len(gone)} staged file(s) of query {p.query} are gone (e.g. {gone[0]}): "
                "materialize the range again"
            )
    with DayWriter(data_dir) as writer:
        for name in stats:
            schema = next((p.schemas[name] for p in parts if name in p.schemas), None)
            for day in sorted(set(days)):
                pieces = [
                    _read_staged(p.path(name, day))
                    for p in parts
                    if p.staged.get(name, {}).get(day)
                ]
                if pieces:
                    table = pa.concat_tables(pieces, promote_options="default")
                elif schema is not None:
                    table = schema.empty_table()
                else:
                    continue
                writer.write(name, day, table)
                stats[name].add(table, day)
    for p in parts:
        shutil.rmtree(p.stage_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # the run's folder, once its last query's is gone
            Path(p.stage_dir).parent.rmdir()
    return stats


def _metadata(stats: TableStats, days: list[date]) -> Mapping[str, object]:
    """Metadata of every partition of the run: the run's totals and the table's column schema.
    Each partition's own numbers come from :func:`_day_metadata` and override these."""
    metadata: dict[str, object] = {
        "rows_in_run": stats.rows,
        "days_in_run": stats.days,
        "date_range": f"{min(days)}..{max(days)}",
    }
    if stats.schema is not None:
        metadata["dagster/column_schema"] = column_schema(stats.schema)
    return metadata


def _day_metadata(day: DayStats) -> dict[str, object]:
    """Metadata of one partition (report date): its own row count, accounts and preview."""
    metadata: dict[str, object] = {
        "dagster/row_count": day.rows,
        "accounts": sorted(day.rows_by_account),
        "rows_by_account": dg.MetadataValue.json(dict(sorted(day.rows_by_account.items()))),
    }
    if day.preview is not None:
        metadata["preview"] = dg.MetadataValue.md(preview_markdown(day.preview))
    return metadata


def _description(name: str) -> str:
    return f"Flex {name}, every account: `data/normalized/{name}/date=<day>/`"


def _check_specs() -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            PARSE_CHECK,
            asset=name,
            description="WARN when values of this table did not convert (kept as null, raw text "
            "in extra), on positions_daily when rows have no price (null values), or, on "
            "account_info, when a statement had a statement-level warning (a wrong count, a "
            "clipped period, a section not imported, ...)",
        )
        for name in NORMALIZED_TABLES
    ]


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            name,
            deps=[raw_flex_statement],
            group_name="normalized",
            kinds={"parquet"},
            description=_description(name),
        )
        for name in NORMALIZED_TABLES
    ],
    check_specs=_check_specs(),
    partitions_def=daily,
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=True,
)
def normalized_flex(
    context: dg.AssetExecutionContext, data_dir: DataDirResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Parse the run's statements once and write each selected table's day files."""
    days, tables = _run_days(context), _selected_tables(context)
    problems: list[TableWarning] = []
    stats = normalize_days(data_dir.root(), days, tables, problems=problems)
    yield from _results(context, days, tables, stats, problems)


def _run_days(context: dg.OpExecutionContext) -> list[date]:
    # partition_time_window spans one key and a range run alike; never branch on
    # has_partition_key (False in range runs).
    window = context.partition_time_window
    return list(days_in(window.start.date(), window.end.date() - timedelta(days=1)))


def _selected_tables(context: dg.OpExecutionContext) -> list[str]:
    selected = {k.path[-1] for k in context.selected_asset_keys}
    return [name for name in NORMALIZED_TABLES if name in selected]


def _results(
    context: dg.OpExecutionContext,
    days: list[date],
    tables: list[str],
    stats: Mapping[str, TableStats],
    problems: list[TableWarning],
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Each selected table's materialization (run totals, each day's own numbers) and check."""
    for w in problems:
        context.log.warning(f"{w.table}: {w.line}")
    selected_checks = {k.asset_key.path[-1] for k in context.selected_asset_check_keys}
    for name in tables:
        context.log.info(
            f"{name}: {stats[name].rows} rows of {len(stats[name].rows_by_account)} accounts "
            f"in {stats[name].days} days"
        )
        mine = [w for w in problems if w.table == name]
        metadata = {**_metadata(stats[name], days), **parse_warning_metadata(mine)}
        # One materialization per day: each carries the run's metadata above, overridden by
        # its own day's numbers (dagster merges partition-scoped asset metadata last).
        for day, day_stats in stats[name].by_day.items():
            context.add_asset_metadata(
                _day_metadata(day_stats), asset_key=name, partition_key=day.isoformat()
            )
        yield dg.MaterializeResult(asset_key=name, metadata=metadata)
        if name in selected_checks:
            yield dg.AssetCheckResult(asset_key=name, **parse_check_fields(mine))


def _normalize_op(query: str, queries: Sequence[str]) -> dg.OpDefinition:
    """The step parsing ``query``'s statements of the run's days and staging their rows."""

    @dg.op(
        name=f"normalize_{query}",
        ins={"raw": dg.In(dg.Nothing)},
        required_resource_keys={"data_dir"},
        description=f"Parse the statements of Flex query {query} for the run's days and stage "
        "their rows (the day files are written by write_tables).",
    )
    def normalize(context: dg.OpExecutionContext) -> QueryRows:
        root = context.resources.data_dir.root()
        stage = root / STAGING_DIR / context.run_id / query
        for run_id in prune_staging(root, partial(_run_ended, context.instance)):
            context.log.info(f"removed the staged rows of ended run {run_id}")
        part = normalize_query(
            root, _run_days(context), _selected_tables(context), query, queries, stage
        )
        rows = sum(n for by_day in part.staged.values() for n in by_day.values())
        context.log.info(
            f"query {query}: {len(part.statements)} statement(s) parsed, {rows} rows staged"
        )
        return part

    return normalize


def _run_ended(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether ``run_id`` has finished (or is unknown to ``instance``)."""
    run = instance.get_run_by_id(run_id)
    return run is None or run.is_finished


def _check_output(name: str) -> str:
    return dg.AssetCheckSpec(PARSE_CHECK, asset=name).get_python_identifier()


@dg.op(
    name="write_tables",
    out={
        **{name: dg.Out(dg.Nothing, is_required=False) for name in NORMALIZED_TABLES},
        **{
            _check_output(name): dg.Out(dg.Nothing, is_required=False) for name in NORMALIZED_TABLES
        },
    },
    required_resource_keys={"data_dir"},
    description="Write each (table, day) file from the rows every query's step staged, and "
    "materialize the normalized tables.",
)
def write_tables(
    context: dg.AssetExecutionContext, parts: list[QueryRows]
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    days, tables = _run_days(context), _selected_tables(context)
    stats = write_query_rows(context.resources.data_dir.root(), days, tables, parts)
    problems = [p for part in parts for p in part.problems]
    yield from _results(context, days, tables, stats, problems)


def build_normalized_flex(queries: Sequence[FlexQuery]) -> dg.AssetsDefinition:
    """``normalized_flex`` for ``queries``: the single-step multi-asset for one query, else a
    graph-backed multi-asset with the same keys, checks and partitions: one ``normalize_<query>``
    step per query (only its statements: memory bounded by the largest query, steps spread over
    the executor's workers), then ``write_tables``, which writes the day files and yields the
    materializations."""
    if len(queries) <= 1:
        return normalized_flex
    names = [q.name for q in queries]
    steps = [_normalize_op(name, names) for name in names]

    @dg.graph_multi_asset(
        name="normalized_flex",
        outs={
            name: dg.AssetOut(kinds={"parquet"}, description=_description(name))
            for name in NORMALIZED_TABLES
        },
        ins={"raw_flex_statement": dg.AssetIn(raw_flex_statement.key, dagster_type=dg.Nothing)},
        check_specs=_check_specs(),
        partitions_def=daily,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name="normalized",
        can_subset=True,
    )
    def normalized_flex_by_query(raw_flex_statement):
        written = write_tables([step(raw_flex_statement) for step in steps])
        return {
            **{name: getattr(written, name) for name in NORMALIZED_TABLES},
            **{
                _check_output(name): getattr(written, _check_output(name))
                for name in NORMALIZED_TABLES
            },
        }

    return normalized_flex_by_query
