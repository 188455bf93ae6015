"""Partitions shared by every asset: account (dynamic) x date (daily).

There is exactly one ``DailyPartitionsDefinition`` (``daily``); the account x date definition reuses
it so Dagster infers ``MultiToSingleDimensionPartitionMapping`` from daily assets to it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import dagster as dg

from ibpipeline import settings

ACCOUNT_DIMENSION = "account"
DATE_DIMENSION = "date"
ACCOUNT_ID_RE = re.compile(r"^[A-Z]{1,2}[0-9]{5,9}$")

daily = dg.DailyPartitionsDefinition(start_date=settings.start_date())
accounts = dg.DynamicPartitionsDefinition(name=ACCOUNT_DIMENSION)
account_daily = dg.MultiPartitionsDefinition({ACCOUNT_DIMENSION: accounts, DATE_DIMENSION: daily})


class InvalidAccountIdError(ValueError):
    """An account id does not look like an IBKR account id (``^[A-Z]{1,2}[0-9]{5,9}$``)."""


def validate_account_id(account_id: str) -> str:
    """Return ``account_id`` unchanged or raise InvalidAccountIdError.

    The pattern also guarantees the id is safe as a Dagster key (no ``| , [ ]``) and as a
    hive directory name.
    """
    if not isinstance(account_id, str) or not ACCOUNT_ID_RE.fullmatch(account_id):
        raise InvalidAccountIdError(
            f"invalid account id {account_id!r}: expected IBKR style ^[A-Z]{{1,2}}[0-9]{{5,9}}$"
        )
    return account_id


def register_accounts(instance: dg.DagsterInstance, account_ids: Iterable[str]) -> list[str]:
    """Validate and add account ids to the ``account`` dynamic partitions; return the new ones.

    Idempotent: ids already registered are skipped. All ids are validated before anything is added.
    """
    ids = sorted({validate_account_id(a) for a in account_ids})
    existing = set(instance.get_dynamic_partitions(ACCOUNT_DIMENSION))
    new = [a for a in ids if a not in existing]
    if new:
        instance.add_dynamic_partitions(ACCOUNT_DIMENSION, new)
    return new


def account_date_key(account_id: str, date_key: str) -> dg.MultiPartitionKey:
    """The ``account_daily`` key for one account and ``YYYY-MM-DD`` date (``U1234567|2024-01-31``)."""
    return dg.MultiPartitionKey(
        {ACCOUNT_DIMENSION: validate_account_id(account_id), DATE_DIMENSION: date_key}
    )


def split_account_date_key(key: str) -> tuple[str, str]:
    """Split an ``account_daily`` key (``U1234567|2024-01-31``) into ``(account_id, date_key)``."""
    by_dim = account_daily.get_partition_key_from_str(key).keys_by_dimension
    return by_dim[ACCOUNT_DIMENSION], by_dim[DATE_DIMENSION]
