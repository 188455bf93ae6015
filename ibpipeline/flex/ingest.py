"""Storing fetched Flex statements: raw bytes by hash, plus the manifest of every day they cover.

Plain functions used by the ``raw_flex_statement`` asset (one fetch step per Flex query).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from lxml import etree

from ibpipeline.flex.client import FlexStatementResult
from ibpipeline.flex.scan import IrregularXml, scan_document
from ibpipeline.flex.schema import NULL_TOKENS
from ibpipeline.partitions import validate_account_id
from ibpipeline.storage import rawstore

_FEED_BYTES = 1 << 20


def days_in(fd: date, td: date) -> Iterator[date]:
    """Every calendar day from ``fd`` to ``td`` inclusive."""
    for offset in range((td - fd).days + 1):
        yield fd + timedelta(days=offset)


class _AccountIds:
    """lxml parser target collecting the ``accountId`` of every statement and row element."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    def start(self, tag: str, attrib: dict) -> None:
        account_id = attrib.get("accountId")
        if account_id is not None and account_id not in NULL_TOKENS:
            self.ids.add(account_id)
        elif tag == "FlexStatement":
            self.ids.add(account_id or "")  # a statement without an account id is refused

    def close(self) -> set[str]:
        return self.ids


def statement_accounts(content: bytes) -> tuple[str, ...]:
    """Sorted, validated account ids of a Flex XML response: every ``FlexStatement``'s and every
    row's ``accountId`` (so sub-accounts such as ``U1234567F`` inside a ``U1234567`` statement are
    accounts of the statement too; ``-`` on SUMMARY rows is not an id).

    A document of the regular Flex shape is read by the scanner (``scan_document``); any other
    is streamed through lxml (no tree), fed in 1 MiB chunks: libxml2 refuses a single buffer of
    about 1 GB even with ``huge_tree`` ("Buffer size limit exceeded"). Raises
    InvalidAccountIdError on an unsafe id (:func:`ibpipeline.partitions.validate_account_id`).
    """
    try:  # the regular Flex shape: vectorized, no per-element Python (ibpipeline.flex.scan)
        found = scan_document(content)
    except IrregularXml:
        ids = _account_ids_lxml(content)
    else:
        ids = {a for a in found.account_ids if a not in NULL_TOKENS}
        ids |= {a or "" for a in found.statement_account_ids if a is None or a in NULL_TOKENS}
    return tuple(sorted(validate_account_id(a) for a in ids))


def _account_ids_lxml(content: bytes) -> set[str]:
    """The raw ids of :func:`statement_accounts` read by lxml (any XML; its errors raised)."""
    parser = etree.XMLParser(
        target=_AccountIds(), huge_tree=True, resolve_entities="internal", no_network=True
    )
    view = memoryview(content)
    for i in range(0, len(view), _FEED_BYTES):
        parser.feed(bytes(view[i : i + _FEED_BYTES]))
    return parser.close()


@dataclass(frozen=True)
class StoredWindow:
    """One fetched and stored statement of a query: its window, hash, size, accounts, HTTP
    requests, and whether the bytes / how many manifest files were written."""

    query: str
    from_date: date
    to_date: date
    sha256: str
    size: int
    written: bool
    accounts: tuple[str, ...]
    requests: int
    manifests_changed: int


@dataclass(frozen=True)
class QueryFetch:
    """What one query's fetch step stored over the run's dates (passed to the recording step)."""

    query: str
    query_id: str
    windows: tuple[StoredWindow, ...]

    @property
    def accounts(self) -> tuple[str, ...]:
        """Every account of every window, sorted."""
        return tuple(sorted({a for w in self.windows for a in w.accounts}))


def store_window(
    data_dir: Path,
    result: FlexStatementResult,
    fd: date,
    td: date,
    accounts: Sequence[str],
    query: str | None = None,
    query_label: str | None = None,
) -> StoredWindow:
    """Store ``result``'s bytes and make it supply ``accounts`` on every day of ``fd..td``.

    ``query``: the query's name recorded in the manifests (None with a single query);
    ``query_label``: the name reported in ``StoredWindow.query`` (defaults to ``query``).
    """
    stored = rawstore.put_statement(data_dir, result.content)
    manifest = rawstore.Manifest(
        sha256=stored.sha256,
        size=stored.size,
        from_date=fd,
        to_date=td,
        accounts=tuple(accounts),
        fetched_at=result.fetched_at.isoformat(timespec="seconds"),
        source="flex",
        query=query,
    )
    changed = rawstore.write_manifests(data_dir, days_in(fd, td), manifest)
    return StoredWindow(
        query=query_label or query or "",
        from_date=fd,
        to_date=td,
        sha256=stored.sha256,
        size=stored.size,
        written=stored.written,
        accounts=tuple(accounts),
        requests=result.requests,
        manifests_changed=changed,
    )
