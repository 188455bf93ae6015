"""Hive-partitioned normalized tables, atomically replaced Parquet files, in two layouts.

- Flex tables, one file per (table, report date) holding every account of that day:
  ``<data_dir>/normalized/<table>/date=<YYYY-MM-DD>/part-0.parquet`` (``write_day``);
- gateway tables, one file per (table, account, date):
  ``<data_dir>/normalized/<table>/account_id=<id>/date=<YYYY-MM-DD>/part-0.parquet``
  (``write_partition``).

Each file is replaced atomically as a whole, so re-running a partition replaces exactly its rows
(never appends). An empty partition is an empty file that still carries the schema. Files also
contain the ``account_id`` and ``date`` columns, so readers need no hive partition inference and
``read_parquet('<table>/**/*.parquet')`` reads either layout.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ibpipeline.partitions import validate_account_id
from ibpipeline.storage import atomic_write_bytes

PART_FILE = "part-0.parquet"
TABLE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class PartitionFile:
    """One stored partition of a table; ``account_id`` is None for a whole-day file."""

    account_id: str | None
    date: date
    path: Path


def normalized_root(data_dir: Path) -> Path:
    """``<data_dir>/normalized``."""
    return Path(data_dir) / "normalized"


def table_glob(data_dir: Path, table_name: str) -> str:
    """Absolute glob matching every partition file of a table, in either layout."""
    return str(
        normalized_root(data_dir).resolve() / _check_table_name(table_name) / "**" / PART_FILE
    )


def _check_table_name(table_name: str) -> str:
    if not TABLE_NAME_RE.fullmatch(table_name):
        raise ValueError(f"invalid table name {table_name!r}: expected snake_case")
    return table_name


def day_path(data_dir: Path, table_name: str, day: date) -> Path:
    """Path of the Parquet file of one (table, date) partition (every account of the day)."""
    return (
        normalized_root(data_dir)
        / _check_table_name(table_name)
        / f"date={day.isoformat()}"
        / PART_FILE
    )


def partition_path(data_dir: Path, table_name: str, account_id: str, day: date) -> Path:
    """Path of the Parquet file of one (table, account, date) partition."""
    return (
        normalized_root(data_dir)
        / _check_table_name(table_name)
        / f"account_id={validate_account_id(account_id)}"
        / f"date={day.isoformat()}"
        / PART_FILE
    )


def _check_dates(table: pa.Table, day: date) -> None:
    if table.num_rows == 0 or "date" not in table.column_names:
        return
    col = table["date"].cast(pa.date32())
    bad = pc.sum(pc.not_equal(col, pa.scalar(day, pa.date32()))).as_py() or 0
    if bad or col.null_count:
        raise ValueError(f"rows with date other than {day} in its partition")


def _check_rows_belong(table: pa.Table, account_id: str | None, day: date) -> None:
    """Raise ValueError when a row's ``date`` differs from the partition's, or its ``account_id``
    differs from ``account_id`` (or, for a whole-day file, is not a valid account id)."""
    _check_dates(table, day)
    if table.num_rows == 0 or "account_id" not in table.column_names:
        return
    if table["account_id"].null_count:
        raise ValueError(f"rows without account_id in the {day} partition")
    if account_id is None:
        for value in pc.unique(table["account_id"]).to_pylist():
            validate_account_id(value)
        return
    bad = pc.sum(pc.not_equal(table["account_id"], pa.scalar(account_id))).as_py() or 0
    if bad:
        raise ValueError(f"rows with account_id other than {account_id} in its partition")


def _replace(path: Path, table: pa.Table) -> Path:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    data = sink.getvalue().to_pybytes()
    if not _same_bytes(path, data):
        atomic_write_bytes(path, data)
    return path


def write_day(table_name: str, day: date, table: pa.Table, *, data_dir: Path) -> Path:
    """Replace the (table, date) partition, every account of ``day``, with ``table``.

    Same contract as ``write_partition``: atomic, empty ``table`` = empty file with the schema,
    unchanged bytes are not rewritten, rows of another date (or without a valid account id) raise
    ValueError and leave the previous file intact.
    """
    _check_rows_belong(table, None, day)
    return _replace(day_path(data_dir, table_name, day), table)


def write_partition(
    table_name: str, account_id: str, day: date, table: pa.Table, *, data_dir: Path
) -> Path:
    """Replace the (table, account, date) partition with ``table`` atomically; return its path.

    A zero-row ``table`` writes an empty file with the schema. A file whose bytes would not change
    is left untouched (re-runs stay cheap). Raises ValueError when rows carry another account or
    date than the partition. A failure leaves the previous file intact.
    """
    _check_rows_belong(table, account_id, day)
    return _replace(partition_path(data_dir, table_name, account_id, day), table)


def _same_bytes(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except FileNotFoundError:
        return False


def table_names(data_dir: Path) -> list[str]:
    """Names of the normalized tables that have at least one partition directory."""
    root = normalized_root(data_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and TABLE_NAME_RE.fullmatch(p.name))


def has_files(data_dir: Path, table_name: str) -> bool:
    """Whether the table has at least one partition file (either layout)."""
    base = normalized_root(data_dir) / _check_table_name(table_name)
    return any(base.glob(f"date=*/{PART_FILE}")) or any(
        base.glob(f"account_id=*/date=*/{PART_FILE}")
    )


def list_partitions(
    table_name: str,
    *,
    data_dir: Path,
    account_ids: Iterable[str] | None = None,
    start: date | None = None,
    end: date | None = None,
) -> list[PartitionFile]:
    """Stored partition files of a table, sorted by (date, account), filtered by inclusive date
    bounds and, for per-account files, by account (whole-day files always pass that filter)."""
    wanted = set(account_ids) if account_ids is not None else None
    base = normalized_root(data_dir) / _check_table_name(table_name)
    found = [(None, p) for p in base.glob(f"date=*/{PART_FILE}")]
    found += [
        (p.parent.parent.name.removeprefix("account_id="), p)
        for p in base.glob(f"account_id=*/date=*/{PART_FILE}")
    ]
    out = []
    for account_id, path in found:
        day = date.fromisoformat(path.parent.name.removeprefix("date="))
        if account_id is not None and wanted is not None and account_id not in wanted:
            continue
        if (start is not None and day < start) or (end is not None and day > end):
            continue
        out.append(PartitionFile(account_id, day, path))
    return sorted(out, key=lambda p: (p.date, p.account_id or ""))


def read_table(
    table_name: str,
    *,
    data_dir: Path,
    account_ids: Iterable[str] | None = None,
    start: date | None = None,
    end: date | None = None,
) -> pa.Table:
    """The rows of a table for the given accounts (None = all) and inclusive date bounds.

    Returns a table with no columns when nothing is stored for the selection.
    """
    wanted = sorted(set(account_ids)) if account_ids is not None else None
    parts = list_partitions(table_name, data_dir=data_dir, account_ids=wanted, start=start, end=end)
    if not parts:
        return pa.table({})
    table = pa.concat_tables(
        [pq.ParquetFile(p.path).read() for p in parts], promote_options="default"
    )
    if wanted is not None and "account_id" in table.column_names:
        table = table.filter(pc.is_in(table["account_id"], pa.array(wanted, pa.string())))
    return table


def read_day(
    table_name: str, day: date, *, data_dir: Path, account_id: str | None = None
) -> pa.Table | None:
    """The stored whole-day file of ``day`` (only ``account_id``'s rows when given), or None
    when that day was never written."""
    path = day_path(data_dir, table_name, day)
    if not path.is_file():
        return None
    table = pq.read_table(path)
    if account_id is not None:
        table = table.filter(pc.equal(table["account_id"], pa.scalar(account_id)))
    return table
