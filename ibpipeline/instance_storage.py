"""Dagster event-log storage for the embedded SQLite instance that stores a batch of asset events in
one transaction per database.

A range run records one materialization per (asset, day): 23,361 for a year of
``flex_daily_job``. Dagster's ``SqliteEventLogStorage.store_event`` opens two new SQLAlchemy
engines (the run's shard and the cross-run index) and commits twice for every one of them, which
made Dagster's bookkeeping most of a year-long backfill's time (bench/README.md). Dagster hands the
materializations of one output as a batch to ``store_event_batch`` when ``DAGSTER_EVENT_BATCH_SIZE``
is set (``ibpipeline.definitions`` sets it); the SQLite class then still stores them one by one.
This class stores the batch with one connection and one transaction per shard, writing the same
rows as ``store_event`` (event rows in both shards, asset event tags, the asset's latest-event row)
so every query of the instance answers the same. It also keeps the SQLAlchemy engine of each
recent shard (Dagster creates one per transaction) and stores a run's planned checks in one
transaction. Postgres storage already batches
(``dagster_postgres``), so production instances need nothing from here.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import groupby
from pathlib import Path

from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._serdes import ConfigurableClassData
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

BATCHED_TYPES = frozenset(
    {
        DagsterEventType.ASSET_MATERIALIZATION,
        DagsterEventType.ASSET_OBSERVATION,
        DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
    }
)
"""Event types stored in one transaction; any other batch goes event by event, as in Dagster."""


ENGINES_KEPT = 16
"""SQLAlchemy engines (one per shard: the index and the latest runs' files) kept for reuse."""


class BatchingSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` whose ``store_event_batch`` writes a batch of materializations,
    observations or planned materializations (one type, one run) in one transaction per shard
    instead of two new engines and two commits each, and which keeps the engine of each recent
    shard instead of creating one for every connection (``_connect``)."""

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: dict
    ) -> BatchingSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        """Dagster's ``_connect`` (one transaction on the shard's file, under ``_db_lock``) with the
        shard's engine kept: creating and disposing an engine for each of the ~600 events of a
        daily run (each one ~5 ms: the dialect's first-connect queries) was ~3 s of it
        (bench/README.md, session 8). The engines pool nothing (``NullPool``, as Dagster's), so a
        kept engine holds no file open and no lock between transactions."""
        with self._db_lock:
            engines: OrderedDict[str, Engine] = self.__dict__.setdefault("_engines", OrderedDict())
            engine = engines.get(shard)
            if engine is None:
                engine = create_engine(
                    self.conn_string_for_shard(shard),
                    poolclass=NullPool,
                    connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
                )
                engines[shard] = engine
                while len(engines) > ENGINES_KEPT:
                    engines.popitem(last=False)[1].dispose()
            else:
                engines.move_to_end(shard)
            if shard not in self._initialized_dbs:  # a new shard, or after wipe() or migrations
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """Store ``events`` (one run's) group by group of consecutive events of one type: planned
        or stored asset events and planned checks in one transaction per shard, any other type
        (and a batch spanning runs) event by event, as Dagster does."""
        events = [e for e in events if e.is_dagster_event]
        if len(events) < 2 or len({e.run_id for e in events}) != 1:
            super().store_event_batch(events)
            return
        for event_type, grouped in groupby(events, key=lambda e: e.get_dagster_event().event_type):
            group = list(grouped)
            if len(group) > 1 and event_type in BATCHED_TYPES:
                self._store_asset_events(group)
            elif len(group) > 1 and event_type == DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED:
                self._store_planned_checks(group)
            else:
                super().store_event_batch(group)

    def _insert_events(self, events: Sequence[EventLogEntry]) -> Callable[[Connection], list[int]]:
        """Insert ``events`` in the run's shard (one transaction); return the function inserting
        them through a connection of the index shard and returning their ids, in order. (Two
        steps: ``_connect`` holds a non-reentrant lock, so the shards' transactions cannot nest.)"""
        rows = [self._event_to_row(event) for event in events]
        with self.run_connection(events[0].run_id) as run_conn:
            run_conn.execute(SqlEventLogStorageTable.insert(), rows)

        def insert_in_index(conn: Connection) -> list[int]:
            inserted = conn.execute(
                SqlEventLogStorageTable.insert().returning(
                    SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
                ),
                rows,
            )
            return [row[0] for row in inserted]

        return insert_in_index

    def _store_asset_events(self, events: Sequence[EventLogEntry]) -> None:
        """What ``store_event`` writes for each asset event: the event in both shards, its tags,
        the asset's latest-event row."""
        insert_in_index = self._insert_events(events)
        with self.index_transaction() as conn:
            event_ids = insert_in_index(conn)
            self._store_asset_event_tags(conn, events, event_ids)
            latest = {}  # asset key -> its last event of the batch (the asset row keeps only it)
            for event, event_id in zip(events, event_ids, strict=True):
                latest[event.get_dagster_event().asset_key] = (event, event_id)
            for event, event_id in latest.values():
                self._store_asset_event(conn, event, event_id)

    def _store_planned_checks(self, events: Sequence[EventLogEntry]) -> None:
        """What ``store_event`` writes for each planned check (a run plans one per check at its
        start: 104 in ``flex_daily_job``): the event in both shards, then its execution row."""
        insert_in_index = self._insert_events(events)
        with self.index_transaction() as conn:
            event_ids = insert_in_index(conn)
        for event, event_id in zip(events, event_ids, strict=True):
            self.store_asset_check_event(event, event_id)


EVENT_BATCH_SIZE_ENV = "DAGSTER_EVENT_BATCH_SIZE"
EVENT_BATCH_SIZE = 10_000
"""Asset events of one output (one per partition of a range run) stored as one batch; a value
already in the environment wins (``0`` turns batching off)."""


def enable_event_batches() -> None:
    """Make Dagster hand the per-partition events of an output to ``store_event_batch`` in this
    process and the step processes it starts (Dagster reads the variable at each event)."""
    os.environ.setdefault(EVENT_BATCH_SIZE_ENV, str(EVENT_BATCH_SIZE))


def event_log_storage_config(base_dir: Path) -> dict:
    """The ``event_log_storage`` block of an instance config using this class under ``base_dir``
    (what ``dagster.yaml`` sets; e.g. ``dg.instance_for_test(overrides=...)``)."""
    return {
        "module": __name__,
        "class": BatchingSqliteEventLogStorage.__name__,
        "config": {"base_dir": str(base_dir)},
    }
