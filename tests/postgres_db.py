"""A fresh database on the local PostgreSQL (127.0.0.1:5432, trust auth, user postgres) for one
test, dropped afterwards; the test is skipped where no server answers."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """Create ``<prefix>_<random>``, yield its name, drop it (``WITH (FORCE)``) on exit."""
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=3, **PG)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no local PostgreSQL: {exc}")
    admin.autocommit = True
    name = f"{prefix}_{secrets.token_hex(6)}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
