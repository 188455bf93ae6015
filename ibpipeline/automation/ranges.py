"""Pure helpers for range runs and report days.

A range run is an ordinary run with the tags ``dagster/asset_partition_range_start`` and
``dagster/asset_partition_range_end`` (inclusive keys). Over a daily definition the run covers
the dates between them; over account x date it covers the cross product of the account range (in
the order the accounts were registered) and the date range.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from ibpipeline.partitions import account_date_key

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def range_tags(start: str, end: str) -> dict[str, str]:
    """Tags that make one run cover the partition key range ``start..end`` (inclusive)."""
    return {RANGE_START_TAG: start, RANGE_END_TAG: end}


def previous_business_day(day: date) -> date:
    """The latest Monday-Friday strictly before ``day``."""
    previous = day - timedelta(days=1)
    while previous.weekday() >= 5:
        previous -= timedelta(days=1)
    return previous


def ready_report_day(moment: datetime, timezone: str) -> date:
    """The newest report day whose Flex statement is published at ``moment``: the previous
    business day of ``moment``'s local date in ``timezone`` (``moment`` must be tz-aware)."""
    if moment.tzinfo is None:
        raise ValueError(f"moment must be timezone-aware, got naive {moment.isoformat()}")
    return previous_business_day(moment.astimezone(ZoneInfo(timezone)).date())


def last_published_day(moment: datetime, timezone: str) -> date:
    """The newest report day whose Flex statement can be published at ``moment``: the day before
    ``moment``'s local date in ``timezone`` (IBKR publishes a day after its close of business;
    ``moment`` must be tz-aware)."""
    if moment.tzinfo is None:
        raise ValueError(f"moment must be timezone-aware, got naive {moment.isoformat()}")
    return moment.astimezone(ZoneInfo(timezone)).date() - timedelta(days=1)


def account_range_tags(first_account: str, last_account: str, start: date, end: date) -> dict:
    """Range tags over account x date (``gateway_account_daily``): accounts ``first..last`` x
    dates ``start..end``."""
    return range_tags(
        str(account_date_key(first_account, start.isoformat())),
        str(account_date_key(last_account, end.isoformat())),
    )
