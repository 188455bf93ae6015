"""Partitions: report dates (``daily``) and accounts (the ``account`` dynamic partitions).

There is exactly one ``DailyPartitionsDefinition`` for report dates (``daily``): the raw Flex
statements, the normalized Flex tables (every account in each day's file) and the daily marts
share it, so day D of each reads day D of the one before, and any contiguous range is one run.
``accounts`` holds every account id ever seen (never removed); the gateway tables are partitioned
by account x their own New York day (``ibpipeline.assets.gateway``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import dagster as dg

from ibpipeline import settings
from ibpipeline.flex.schema import ACCOUNT_ID_SAFE

ACCOUNT_DIMENSION = "account"
DATE_DIMENSION = "date"
ACCOUNT_ID_RE = re.compile(r"^(?!.*\.\.)" + ACCOUNT_ID_SAFE.removeprefix("^"))
"""Safe account ids: letters, digits, ``_ - * .``; first a letter or digit; <= 64 chars; no ``..``."""

daily = dg.DailyPartitionsDefinition(start_date=settings.start_date())
accounts = dg.DynamicPartitionsDefinition(name=ACCOUNT_DIMENSION)


class InvalidAccountIdError(ValueError):
    """An account id that is not safe in a file path, an SQL literal or a Dagster key."""


def validate_account_id(account_id: str) -> str:
    """Return ``account_id`` unchanged or raise InvalidAccountIdError.

    Validation is for safety only, not for IBKR's format: every id a statement carries is
    accepted (``U1234567``, ``DU1234567``, ``F1234567``, ``U1234567F``, placeholders such as
    ``XXXXXUSD``, ``U***4321``, ``TEST_ACC``). Refused: empty, longer than 64 characters, a first
    character other than a letter or digit, any character other than letters, digits and
    ``_ - * .``, or ``..`` (so no path separator, quote, whitespace, ``| , [ ]`` or ``...``).
    """
    if not isinstance(account_id, str) or not ACCOUNT_ID_RE.fullmatch(account_id):
        raise InvalidAccountIdError(
            f"invalid account id {account_id!r}: an account id must be 1-64 letters, digits, "
            "'_', '-', '*' or '.', start with a letter or digit and hold no '..' (it names "
            "files, SQL literals and Dagster partitions)"
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
    """The account x date key of one account and ``YYYY-MM-DD`` date (``U1234567|2024-01-31``)."""
    return dg.MultiPartitionKey(
        {ACCOUNT_DIMENSION: validate_account_id(account_id), DATE_DIMENSION: date_key}
    )
