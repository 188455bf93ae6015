"""Synchronous backfill: raw over a date range as one run, then normalized over every account.

``run_backfill`` is what ``ibpipeline backfill --start --end`` runs. The raw run sends one Flex
request per <= 365-day window whatever the number of accounts; the normalized run covers
``<first account>|start .. <last account>|end`` (all registered accounts, in registration order),
so each statement is parsed once. This is the same pair of runs the daily schedule and
``flex_normalize_after_raw`` produce, executed in this process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import dagster as dg

from ibpipeline.automation.jobs import flex_normalize_job, flex_raw_job
from ibpipeline.automation.ranges import (
    NO_ACCOUNTS,
    NORMALIZE_ACCOUNTS_TAG,
    account_blocks,
    account_range_tags,
    range_tags,
)
from ibpipeline.partitions import ACCOUNT_DIMENSION, daily


@dataclass(frozen=True)
class BackfillResult:
    """Run ids of the raw run and of the normalized run(s), and the accounts covered."""

    raw_run_id: str
    normalize_run_ids: tuple[str, ...]
    accounts: tuple[str, ...]


def check_range(start: date, end: date) -> None:
    """Raise ValueError unless ``start <= end`` and both are daily partition keys."""
    if start > end:
        raise ValueError(f"backfill start {start} is after its end {end}")
    first = daily.start.date()
    if start < first:
        raise ValueError(f"backfill start {start} is before the first partition {first}")


def run_backfill(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    start: date,
    end: date,
    accounts: list[str] | None = None,
    tags: Mapping[str, str] | None = None,
) -> BackfillResult:
    """Fetch ``start..end`` (inclusive) in one raw run, then normalize it for ``accounts`` (None =
    every registered account, including those the raw run just registered).

    Raises ``dg.DagsterExecutionStepExecutionError`` style errors from a failed run; nothing is
    normalized when the raw run fails.
    """
    check_range(start, end)
    raw = defs.resolve_job_def(flex_raw_job.name).execute_in_process(
        instance=instance,
        tags={
            **(tags or {}),
            **range_tags(start.isoformat(), end.isoformat()),
            NORMALIZE_ACCOUNTS_TAG: NO_ACCOUNTS,  # normalized right below, not by the sensor
        },
    )
    registered = instance.get_dynamic_partitions(ACCOUNT_DIMENSION)
    wanted = registered if accounts is None else accounts
    unknown = sorted(set(wanted) - set(registered))
    if unknown:
        raise ValueError(f"accounts not registered (not in any stored statement): {unknown}")
    job = defs.resolve_job_def(flex_normalize_job.name)
    run_ids = []
    for first, last in account_blocks(registered, wanted):
        result = job.execute_in_process(
            instance=instance, tags={**(tags or {}), **account_range_tags(first, last, start, end)}
        )
        run_ids.append(result.run_id)
    return BackfillResult(
        raw.run_id, tuple(run_ids), tuple(a for a in registered if a in set(wanted))
    )
