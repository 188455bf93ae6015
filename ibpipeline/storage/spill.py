"""Rows waiting on disk: one normalize call's rows of a large statement, per (table, day), until
their day files are written (``ibpipeline.assets.normalized``).

A statement too large to hold normalized (a year of 100 accounts is ~300 MB of XML) is parsed in
parts; each part's rows of each day are appended here and read back one (table, day) at a time,
so memory is one part plus one day's rows, whatever the number of days.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc  # noqa: F401  (pa.ipc)

SPILL_DIR = Path("staging") / "spill"
"""Under the data folder: ``<random>/<statement>/<table>.arrow``, one normalize call's spilled
rows, removed when it ends (a folder left by a killed process is removed a day later)."""
SPILL_RETENTION = timedelta(days=1)


class Spill:
    """Rows of many tables and days, on disk: per table an Arrow IPC file under ``folder`` holding
    one record batch per ``add`` (uncompressed: written and read back once, mostly from the page
    cache); a day's rows are read back alone (``SpilledRows.take``), sorted stably by
    ``sort_keys[table]`` when given (rows added in sorted runs come back in one sorted order)."""

    def __init__(self, folder: Path, sort_keys: Mapping[str, Sequence[str]] | None = None) -> None:
        folder.mkdir(parents=True)
        self.folder = folder
        self.sort_keys = dict(sort_keys or {})
        self.schemas: dict[str, pa.Schema] = {}
        self.batches: dict[str, dict[date, list[int]]] = {}
        self._writers: dict[str, tuple[pa.OSFile, pa.ipc.RecordBatchFileWriter]] = {}
        self._readers: dict[str, pa.ipc.RecordBatchFileReader] = {}
        self._count: dict[str, int] = {}

    def add(self, name: str, day: date, table: pa.Table) -> None:
        """Append ``table`` (rows of ``day``) to the rows of ``name``."""
        if name not in self._writers:
            schema = self.schemas.setdefault(name, table.schema)
            sink = pa.OSFile(str(self.folder / f"{name}.arrow"), "wb")
            self._writers[name] = (sink, pa.ipc.new_file(sink, schema))
            self._count[name] = 0
        writer = self._writers[name][1]
        if not table.schema.equals(self.schemas[name]):
            table = table.cast(self.schemas[name])
        indexes = self.batches.setdefault(name, {}).setdefault(day, [])
        for batch in table.to_batches():
            writer.write_batch(batch)
            indexes.append(self._count[name])
            self._count[name] += 1

    def finish(self) -> None:
        """Close the files written (before reading them)."""
        for sink, writer in self._writers.values():
            writer.close()
            sink.close()
        self._writers = {}

    def rows(self, name: str) -> dict[date, SpilledRows]:
        return {
            day: SpilledRows(self, name, tuple(i)) for day, i in self.batches.get(name, {}).items()
        }

    def read(self, name: str, indexes: Sequence[int]) -> pa.Table:
        reader = self._readers.get(name)
        if reader is None:  # a plain file, not a memory map: pages read are not kept resident
            reader = pa.ipc.open_file(pa.OSFile(str(self.folder / f"{name}.arrow")))
            self._readers[name] = reader
        table = pa.Table.from_batches([reader.get_batch(i) for i in indexes], self.schemas[name])
        keys = self.sort_keys.get(name)
        if keys and table.num_rows:
            table = table.take(pc.sort_indices(table, [(k, "ascending") for k in keys]))
        return table

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.finish()
        self._readers = {}
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass(frozen=True)
class SpilledRows:
    """One day's rows of a spilled table (``Spill``), read when taken: :class:`Rows` on disk."""

    spill: Spill
    name: str
    indexes: tuple[int, ...]

    def take(self) -> pa.Table:
        return self.spill.read(self.name, self.indexes)


@contextlib.contextmanager
def spill_folder(data_dir: Path) -> Iterator[Path]:
    """A new folder for one call's spilled rows under ``<data_dir>/staging/spill/``, removed when
    the block ends; folders older than ``SPILL_RETENTION`` (a killed process's) go first."""
    root = Path(data_dir) / SPILL_DIR
    cutoff = datetime.now(UTC).timestamp() - SPILL_RETENTION.total_seconds()
    for old in root.iterdir() if root.is_dir() else ():
        with contextlib.suppress(OSError):
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
    folder = root / uuid.uuid4().hex
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
