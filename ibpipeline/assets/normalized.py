"""Normalized Flex tables: one ``@multi_asset`` over report dates, parsing each statement once.

Partitioned by ``daily`` like ``raw_flex_statement``, so raw and normalized run in one job and a
backfill of any range is one run. For the run's report dates the asset reads the per-date
manifests (which statement supplies each account of the day), parses each statement once,
reconstructs daily positions, and replaces every (table, date) file with all accounts' rows of
that date (an empty file when the day has no rows).
"""

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from ibpipeline.assets.raw import days_in, raw_flex_statement
from ibpipeline.flex.parse import ParsedFlex, parse_statement
from ibpipeline.flex.positions import reconstruct_daily_positions
from ibpipeline.partitions import daily
from ibpipeline.resources import DataDirResource
from ibpipeline.storage import parquet, rawstore

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


def split_by(
    table: pa.Table, columns: Sequence[str], wanted: Collection[tuple]
) -> dict[tuple, pa.Table]:
    """Rows of ``table`` grouped by the values of ``columns`` (keys are tuples of them), keeping
    only the ``wanted`` groups. Row order inside a group is preserved."""
    if table.num_rows == 0 or not wanted:
        return {}
    keys = {f"k{i}": table[c] for i, c in enumerate(columns)}
    order = pc.sort_indices(
        pa.table({**keys, "i": pa.array(range(table.num_rows))}),
        sort_keys=[(k, "ascending") for k in (*keys, "i")],
    )
    ordered = table.take(order)
    values = list(zip(*(ordered[c].to_pylist() for c in columns), strict=True))
    out: dict[tuple, pa.Table] = {}
    start = 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            if values[start] in wanted:
                out[values[start]] = ordered.slice(start, i - start)
            start = i
    return out


def parsed_tables(parsed: ParsedFlex) -> dict[str, pa.Table]:
    """Every normalized table of a parsed statement (positions reconstructed per day)."""
    tables = {name: parsed.tables[name] for name in PARSED_TABLES}
    tables["positions_daily"] = reconstruct_daily_positions(parsed)
    return tables


def statement_problems(parsed: ParsedFlex) -> list[tuple[str, str]]:
    """``(table, line)`` per parse warning of a statement: value problems under their table,
    statement-level warnings (count, period, date format) under ``account_info``."""
    label = f"statement {parsed.source_sha256[:12]}"
    lines = {p.line() for p in parsed.problems}
    out = [(p.table, f"{label}: {p.line()}") for p in parsed.problems]
    out += [("account_info", f"{label}: {w}") for w in parsed.warnings if w not in lines]
    return out


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
    """What one run wrote for one table and day: rows, rows per account, a preview."""

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
            mine.preview = table.slice(0, PREVIEW_ROWS)
            if self.preview is None:
                self.preview = mine.preview
        if day is not None:
            self.by_day[day] = mine


def _accounts(table: pa.Table) -> set[str]:
    return set(pc.unique(table["account_id"]).to_pylist()) if table.num_rows else set()


def normalize_days(
    data_dir: Path,
    days: Iterable[date],
    tables: Iterable[str],
    preparsed: Mapping[str, Mapping[str, pa.Table]] | None = None,
    changed: Mapping[date, Collection[str]] | None = None,
    problems: list[tuple[str, str]] | None = None,
) -> dict[str, TableStats]:
    """Replace the (table, day) file of every selected table and day from the stored statements.

    ``changed`` (day -> tables) limits the rewrite to those files (an import rewrites only the
    tables it supplies; every other file of the day has the same suppliers as before).

    A day's file holds, for each account, that account's rows from the statement supplying them
    (``rawstore.DayManifest.suppliers``: the newest claim of the (table, account), else the newest
    fallback); an empty file with the schema when the day has no rows. Each statement is read and
    parsed once (``preparsed``: tables of statements already parsed, by sha256). Raises
    MissingRawStatementError before writing anything when a day has no manifest. ``problems``,
    when given, receives ``(table, warning line)`` for every parse warning of the statements read
    here (table ``account_info`` for statement-level warnings).
    """
    tables = tuple(tables)
    manifests = manifests_for(data_dir, days)
    needed = sorted({m.sha256 for manifest in manifests.values() for m in manifest.statements})
    by_day: dict[str, dict[str, dict[date, pa.Table]]] = {}
    schemas: dict[str, pa.Schema] = {}
    for sha256 in needed:
        parsed = (preparsed or {}).get(sha256)
        if parsed is None:
            flex = parse_statement(rawstore.read_statement(data_dir, sha256), source_sha256=sha256)
            parsed = parsed_tables(flex)
            if problems is not None:
                problems.extend(statement_problems(flex))
        wanted = {
            (d,) for d, m in manifests.items() if any(e.sha256 == sha256 for e in m.statements)
        }
        by_day[sha256] = {}
        for name in tables:
            schemas.setdefault(name, parsed[name].schema)
            by_day[sha256][name] = {
                day: part for (day,), part in split_by(parsed[name], ("date",), wanted).items()
            }
    stats = {name: TableStats() for name in tables}
    for name in tables:
        for day, manifest in sorted(manifests.items()):
            if changed is not None and name not in changed.get(day, ()):
                continue
            rows = {sha: by_day[sha][name].get(day) for sha in by_day}
            present = {sha: _accounts(part) for sha, part in rows.items() if part is not None}
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
            table = (
                pa.concat_tables(pieces, promote_options="default")
                if pieces
                else schemas[name].empty_table()
            )
            parquet.write_day(name, day, table, data_dir=data_dir)
            stats[name].add(table, day)
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


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            name,
            deps=[raw_flex_statement],
            group_name="normalized",
            kinds={"parquet"},
            description=f"Flex {name}, every account: data/normalized/{name}/date=<day>/",
        )
        for name in NORMALIZED_TABLES
    ],
    check_specs=[
        dg.AssetCheckSpec(
            PARSE_CHECK,
            asset=name,
            description="WARN when values of this table did not convert (kept as null, raw text "
            "in extra) or, on account_info, when a statement had a statement-level warning",
        )
        for name in NORMALIZED_TABLES
    ],
    partitions_def=daily,
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=True,
)
def normalized_flex(
    context: dg.AssetExecutionContext, data_dir: DataDirResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Parse the run's statements once and write each selected table's day files."""
    # partition_time_window spans one key and a range run alike; never branch on
    # has_partition_key (False in range runs).
    window = context.partition_time_window
    days = list(days_in(window.start.date(), window.end.date() - timedelta(days=1)))
    selected = [k.path[-1] for k in context.selected_asset_keys]
    tables = [name for name in NORMALIZED_TABLES if name in selected]
    problems: list[tuple[str, str]] = []
    stats = normalize_days(data_dir.root(), days, tables, problems=problems)
    for table, line in problems:
        context.log.warning(f"{table}: {line}")
    selected_checks = {k.asset_key.path[-1] for k in context.selected_asset_check_keys}
    for name in tables:
        context.log.info(
            f"{name}: {stats[name].rows} rows of {len(stats[name].rows_by_account)} accounts "
            f"in {stats[name].days} days"
        )
        mine = [line for table, line in problems if table == name]
        metadata = {**_metadata(stats[name], days), "parse_warnings": len(mine)}
        if mine:
            metadata["parse_warning_sample"] = dg.MetadataValue.md(
                "\n".join(f"- {line}" for line in mine[:PREVIEW_ROWS])
            )
        # One materialization per day: each carries the run's metadata above, overridden by
        # its own day's numbers (dagster merges partition-scoped asset metadata last).
        for day, day_stats in stats[name].by_day.items():
            context.add_asset_metadata(
                _day_metadata(day_stats), asset_key=name, partition_key=day.isoformat()
            )
        yield dg.MaterializeResult(asset_key=name, metadata=metadata)
        if name in selected_checks:
            yield dg.AssetCheckResult(
                asset_key=name,
                check_name=PARSE_CHECK,
                passed=not mine,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "parse_warnings": len(mine),
                    "sample": dg.MetadataValue.md("\n".join(f"- {x}" for x in mine[:5]) or "-"),
                },
            )
