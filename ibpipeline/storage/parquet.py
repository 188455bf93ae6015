"""Hive-partitioned normalized tables: one Parquet file per (table, account, report date).

``<data_dir>/normalized/<table>/account_id=<id>/date=<YYYY-MM-DD>/part-0.parquet``

Each file is replaced atomically as a whole, so re-running a partition replaces exactly its rows
(never appends). An empty partition is an empty file that still carries the schema. Files also
contain the ``account_id`` and ``date`` columns, so readers need no hive partition inference.
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
    """One stored partition of a table."""

    account_id: str
    date: date
    path: Path


def normalized_root(data_dir: Path) -> Path:
    """``<data_dir>/normalized``."""
    return Path(data_dir) / "normalized"


def _check_table_name(table_name: str) -> str:
    if not TABLE_NAME_RE.fullmatch(table_name):
        raise ValueError(f"invalid table name {table_name!r}: expected snake_case")
    return table_name


def partition_path(data_dir: Path, table_name: str, account_id: str, day: date) -> Path:
    """Path of the Parquet file of one (table, account, date) partition."""
    return (
        normalized_root(data_dir)
        / _check_table_name(table_name)
        / f"account_id={validate_account_id(account_id)}"
        / f"date={day.isoformat()}"
        / PART_FILE
    )


def _check_rows_belong(table: pa.Table, account_id: str, day: date) -> None:
    """Raise ValueError when a row's ``account_id``/``date`` differs from the partition's."""
    if table.num_rows == 0:
        return
    if "account_id" in table.column_names:
        bad = pc.sum(pc.not_equal(table["account_id"], pa.scalar(account_id))).as_py() or 0
        if bad or table["account_id"].null_count:
            raise ValueError(f"rows with account_id other than {account_id} in its partition")
    if "date" in table.column_names:
        col = table["date"].cast(pa.date32())
        bad = pc.sum(pc.not_equal(col, pa.scalar(day, pa.date32()))).as_py() or 0
        if bad or col.null_count:
            raise ValueError(f"rows with date other than {day} in its partition")


def write_partition(
    table_name: str, account_id: str, day: date, table: pa.Table, *, data_dir: Path
) -> Path:
    """Replace the (table, account, date) partition with ``table`` atomically; return its path.

    A zero-row ``table`` writes an empty file with the schema. A file whose bytes would not change
    is left untouched (re-runs stay cheap). Raises ValueError when rows carry another account or
    date than the partition. A failure leaves the previous file intact.
    """
    _check_rows_belong(table, account_id, day)
    path = partition_path(data_dir, table_name, account_id, day)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    data = sink.getvalue().to_pybytes()
    if not _same_bytes(path, data):
        atomic_write_bytes(path, data)
    return path


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


def list_partitions(
    table_name: str,
    *,
    data_dir: Path,
    account_ids: Iterable[str] | None = None,
    start: date | None = None,
    end: date | None = None,
) -> list[PartitionFile]:
    """Stored partitions of a table, sorted by (account, date), filtered by account and
    inclusive date bounds."""
    wanted = set(account_ids) if account_ids is not None else None
    out = []
    base = normalized_root(data_dir) / _check_table_name(table_name)
    for path in base.glob(f"account_id=*/date=*/{PART_FILE}"):
        account_id = path.parent.parent.name.removeprefix("account_id=")
        day = date.fromisoformat(path.parent.name.removeprefix("date="))
        if wanted is not None and account_id not in wanted:
            continue
        if (start is not None and day < start) or (end is not None and day > end):
            continue
        out.append(PartitionFile(account_id, day, path))
    return sorted(out, key=lambda p: (p.account_id, p.date))


def read_table(
    table_name: str,
    *,
    data_dir: Path,
    account_ids: Iterable[str] | None = None,
    start: date | None = None,
    end: date | None = None,
) -> pa.Table:
    """Concatenate the selected partitions of a table (same filters as ``list_partitions``).

    Returns a table with no columns when nothing is stored for the selection.
    """
    parts = list_partitions(
        table_name, data_dir=data_dir, account_ids=account_ids, start=start, end=end
    )
    if not parts:
        return pa.table({})
    return pa.concat_tables(
        [pq.ParquetFile(p.path).read() for p in parts], promote_options="default"
    )
