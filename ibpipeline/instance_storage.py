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
so every query of the instance answers the same. Postgres storage already batches
(``dagster_postgres``), so production instances need nothing from here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._serdes import ConfigurableClassData

BATCHED_TYPES = frozenset(
    {
        DagsterEventType.ASSET_MATERIALIZATION,
        DagsterEventType.ASSET_OBSERVATION,
        DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
    }
)
"""Event types stored in one transaction; any other batch goes event by event, as in Dagster."""


class BatchingSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` whose ``store_event_batch`` writes a batch of materializations,
    observations or planned materializations (one type, one run) in one transaction per shard
    instead of two new engines and two commits each."""

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: dict
    ) -> BatchingSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        events = [e for e in events if e.is_dagster_event]
        types = {e.get_dagster_event().event_type for e in events}
        if len(events) < 2 or len(types) != 1 or not types <= BATCHED_TYPES:
            super().store_event_batch(events)
            return
        run_ids = {e.run_id for e in events}
        if len(run_ids) != 1:
            super().store_event_batch(events)
            return
        (run_id,) = run_ids
        rows = [self._event_to_row(event) for event in events]
        with self.run_connection(run_id) as conn:
            conn.execute(SqlEventLogStorageTable.insert(), rows)
        with self.index_transaction() as conn:
            inserted = conn.execute(
                SqlEventLogStorageTable.insert().returning(
                    SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
                ),
                rows,
            )
            event_ids = [row[0] for row in inserted]
            self._store_asset_event_tags(conn, events, event_ids)
            latest = {}  # asset key -> its last event of the batch (the asset row keeps only it)
            for event, event_id in zip(events, event_ids, strict=True):
                latest[event.get_dagster_event().asset_key] = (event, event_id)
            for event, event_id in latest.values():
                self._store_asset_event(conn, event, event_id)


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
