"""Pure helpers for range runs: report days, run date ranges, and account blocks.

A range run is an ordinary run with the tags ``dagster/asset_partition_range_start`` and
``dagster/asset_partition_range_end`` (inclusive keys). Over ``account_daily`` the run covers the
cross product of the account range (in the order the accounts were registered) and the date range,
so a set of accounts needs one run per *contiguous block* of that order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from ibpipeline.partitions import account_date_key

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
PARTITION_TAG = "dagster/partition"
BACKFILL_TAG = "dagster/backfill"
NORMALIZE_ACCOUNTS_TAG = "ibpipeline/normalize_accounts"
"""On a raw run: which accounts to normalize after it (``all``, ``none`` or ``U1 U2 ...``)."""
ALL_ACCOUNTS = "all"
NO_ACCOUNTS = "none"


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


def run_date_range(tags: Mapping[str, str]) -> tuple[date, date] | None:
    """Inclusive ``(first, last)`` report dates of a date-partitioned run from its tags.

    ``None`` for an unpartitioned run. Raises ValueError when a tag is not a ``YYYY-MM-DD`` key.
    """
    if RANGE_START_TAG in tags and RANGE_END_TAG in tags:
        first, last = tags[RANGE_START_TAG], tags[RANGE_END_TAG]
    elif PARTITION_TAG in tags:
        first = last = tags[PARTITION_TAG]
    else:
        return None
    try:
        return date.fromisoformat(first), date.fromisoformat(last)
    except ValueError as exc:
        raise ValueError(f"run partition tags are not daily keys: {first!r}..{last!r}") from exc


def account_blocks(registered: Sequence[str], wanted: Iterable[str]) -> list[tuple[str, str]]:
    """``(first, last)`` of each maximal run of ``wanted`` accounts that are adjacent in
    ``registered`` order (the order of the ``account`` dynamic partitions).

    Accounts not registered are ignored. ``account_blocks(reg, reg)`` is one block.
    """
    wanted_set = set(wanted)
    blocks: list[tuple[str, str]] = []
    current: list[str] = []
    for account in registered:
        if account in wanted_set:
            current.append(account)
        elif current:
            blocks.append((current[0], current[-1]))
            current = []
    if current:
        blocks.append((current[0], current[-1]))
    return blocks


def account_range_tags(first_account: str, last_account: str, start: date, end: date) -> dict:
    """Range tags over ``account_daily``: accounts ``first..last`` x dates ``start..end``."""
    return range_tags(
        str(account_date_key(first_account, start.isoformat())),
        str(account_date_key(last_account, end.isoformat())),
    )


def normalize_accounts_tag(accounts: Iterable[str] | str) -> str:
    """Value of ``NORMALIZE_ACCOUNTS_TAG``: ``all``/``none`` or space-separated sorted ids."""
    if isinstance(accounts, str):
        if accounts not in (ALL_ACCOUNTS, NO_ACCOUNTS):
            raise ValueError(f"expected 'all', 'none' or account ids, got {accounts!r}")
        return accounts
    return " ".join(sorted(set(accounts)))


def normalize_accounts_from_tag(value: str | None, registered: Sequence[str]) -> list[str]:
    """Accounts a raw run asks to normalize: every registered one when the tag is absent or
    ``all``, none for ``none``, else the listed ids."""
    if value is None or value == ALL_ACCOUNTS:
        return list(registered)
    if value == NO_ACCOUNTS:
        return []
    return value.split()


def normalize_run_requests(
    registered: Sequence[str],
    accounts: Iterable[str],
    start: date,
    end: date,
    *,
    job_name: str,
    run_key_prefix: str,
    tags: Mapping[str, str] | None = None,
) -> list[dg.RunRequest]:
    """One ``account_daily`` range run per contiguous block of ``accounts`` over ``start..end``."""
    requests = []
    for first, last in account_blocks(registered, accounts):
        requests.append(
            dg.RunRequest(
                run_key=f"{run_key_prefix}:{first}..{last}",
                job_name=job_name,
                tags={**(tags or {}), **account_range_tags(first, last, start, end)},
            )
        )
    return requests
