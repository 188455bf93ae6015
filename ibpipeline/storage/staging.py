"""Rows of parsed statements by (statement, table, report date), kept out of the heap.

Normalizing a range reads every statement that supplies its days (with several Flex queries, one
per query and window). ``StatementRows`` lets each statement be parsed, split by date and dropped
before the next one is parsed: its rows go to one Arrow IPC file per (statement, table) under a
temporary folder of the data folder, read back memory-mapped. Memory then holds one parsed
statement at a time (the largest query's), plus what is being written. With a single statement
(``folder=None``) the rows simply stay in memory, as before.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping
from datetime import date
from pathlib import Path

import pyarrow as pa


class StatementRows:
    """``put`` a statement's rows of a table by date; ``get`` them back, one day at a time."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._memory: dict[tuple[str, str], Mapping[date, pa.Table]] = {}
        self._staged: dict[tuple[str, str], tuple[Path, dict[date, tuple[int, int]]]] = {}
        self._mapped: dict[Path, pa.Table] = {}

    def put(self, sha256: str, table: str, parts: Mapping[date, pa.Table]) -> None:
        """Keep ``parts`` (date -> rows of that date) of ``table`` in statement ``sha256``."""
        if self.folder is None or not parts:
            self._memory[(sha256, table)] = dict(parts)
            return
        days = sorted(parts)
        rows = pa.concat_tables([parts[d] for d in days])
        path = self.folder / f"{sha256}-{table}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, rows.schema) as writer:
            writer.write_table(rows)
        index, start = {}, 0
        for day in days:
            index[day] = (start, parts[day].num_rows)
            start += parts[day].num_rows
        self._staged[(sha256, table)] = (path, index)

    def get(self, sha256: str, table: str, day: date) -> pa.Table | None:
        """The rows of ``table`` dated ``day`` in statement ``sha256``; None when it has none."""
        if (sha256, table) in self._memory:
            return self._memory[(sha256, table)].get(day)
        path, index = self._staged[(sha256, table)]
        if day not in index:
            return None
        mapped = self._mapped.get(path)
        if mapped is None:
            mapped = self._mapped[path] = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
        return mapped.slice(*index[day])


@contextlib.contextmanager
def statement_rows(data_dir: Path, staged: bool) -> Iterator[StatementRows]:
    """A ``StatementRows``, staged under ``<data_dir>/tmp/normalize-*`` (removed afterwards) when
    ``staged``, else in memory."""
    if not staged:
        yield StatementRows()
        return
    parent = Path(data_dir) / "tmp"
    parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=parent, prefix="normalize-") as folder:
            yield StatementRows(Path(folder))
    finally:
        with contextlib.suppress(OSError):
            parent.rmdir()  # only when empty (no other run is staging)
