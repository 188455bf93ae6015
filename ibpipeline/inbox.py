"""Ingest hand-downloaded Flex statements through the same raw -> normalized path as fetches.

A file is parsed once (``ibpipeline.flex.parse``), copied into the content-addressed raw store,
made the statement of its accounts in the per-date manifests of the days it covers
(``source="inbox"``; other accounts of those days keep their statement), and the normalized day
files of those days are rebuilt (``normalized.normalize_days``). A ledger entry
``<data_dir>/raw/inbox/<sha256>.json`` written last marks the content as ingested, so the same
bytes dropped again (under any name) are a duplicate and change nothing.

The newest stored statement of an (account, day) wins, whether fetched or dropped here: a file of
one account never hides another account's rows, and a later Flex re-fetch takes back only the
accounts it contains.

Inbox folder layout: new files in ``<inbox>/``; after processing ``<inbox>/processed/<name>``;
files that fail to parse ``<inbox>/rejected/<name>`` plus ``<inbox>/rejected/<name>.reason.txt``.
A rejected file changes nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

from ibpipeline.assets.normalized import (
    NORMALIZED_TABLES,
    normalize_days,
    parsed_tables,
)
from ibpipeline.flex.parse import FlexParseError, parse_statement
from ibpipeline.partitions import InvalidAccountIdError, validate_account_id
from ibpipeline.storage import atomic_write_bytes, rawstore

PROCESSED_DIR = "processed"
REJECTED_DIR = "rejected"
REASON_SUFFIX = ".reason.txt"
SETTLE_SECONDS = 5.0
"""A file is picked up only when unmodified for this long (it may still be being copied)."""
IGNORED_SUFFIXES = (".tmp", ".part", ".crdownload", ".partial", REASON_SUFFIX)

Status = Literal["ingested", "duplicate", "rejected"]


class InboxRejection(ValueError):
    """A file that is not an ingestible Activity Flex statement (the message is the reason)."""


@dataclass(frozen=True)
class ImportResult:
    """Outcome of one file. ``partitions`` are the (account, day) pairs now read from it;
    ``moved_to`` is set only by ``process_inbox_file``."""

    name: str
    sha256: str
    status: Status
    accounts: tuple[str, ...] = ()
    from_date: date | None = None
    to_date: date | None = None
    days_claimed: tuple[date, ...] = ()
    partitions: tuple[tuple[str, date], ...] = ()
    reason: str | None = None
    moved_to: Path | None = field(default=None, compare=False)

    def summary(self) -> str:
        """One human-readable line."""
        if self.status == "rejected":
            return f"{self.name}: rejected ({self.reason})"
        if self.status == "duplicate":
            return f"{self.name}: duplicate of already ingested {self.sha256[:12]}, nothing written"
        return (
            f"{self.name}: ingested {self.sha256[:12]} accounts {list(self.accounts)} "
            f"{self.from_date}..{self.to_date}: {len(self.days_claimed)} days, "
            f"{len(self.partitions)} account-days read from it"
        )


def ledger_path(data_dir: Path, sha256: str) -> Path:
    """``<data_dir>/raw/inbox/<sha256>.json``: present once the content was ingested."""
    rawstore.statement_path(data_dir, sha256)  # validates the hash
    return Path(data_dir) / "raw" / "inbox" / f"{sha256}.json"


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def coverage(statements: Iterable[tuple[str, date, date]]) -> dict[date, set[str]]:
    """Day -> accounts whose statement in the file covers that day (``(account, from, to)``)."""
    out: dict[date, set[str]] = defaultdict(set)
    for account_id, first, last in statements:
        for day in _days(first, last):
            out[day].add(account_id)
    return dict(out)


def _parse(content: bytes, sha256: str) -> tuple[dict, list[tuple[str, date, date]]]:
    """Normalized tables and ``(account, from, to)`` per statement; raises InboxRejection."""
    try:
        parsed = parse_statement(content, source_sha256=sha256)
        statements = [
            (validate_account_id(s.account_id), s.from_date, s.to_date) for s in parsed.statements
        ]
        if not statements:
            raise InboxRejection("no FlexStatement element: not an Activity Flex statement")
        for account_id, first, last in statements:
            if first > last:
                raise InboxRejection(
                    f"statement of {account_id} ends {last} before it starts {first}"
                )
        return parsed_tables(parsed), statements
    except (FlexParseError, InvalidAccountIdError) as exc:
        raise InboxRejection(str(exc)) from exc


def import_statement(data_dir: Path, path: Path, now: datetime | None = None) -> ImportResult:
    """Ingest one Flex XML file (left where it is); see the module docstring for the rules.

    Returns status ``rejected`` (with ``reason``) without writing anything when the file does not
    parse. Raises OSError when the file cannot be read.
    """
    data_dir, path = Path(data_dir), Path(path)
    content = path.read_bytes()
    sha256 = rawstore.sha256_hex(content)
    if ledger_path(data_dir, sha256).is_file():
        return ImportResult(path.name, sha256, "duplicate")
    try:
        if not content:
            raise InboxRejection("empty file")
        tables, statements = _parse(content, sha256)
    except InboxRejection as exc:
        return ImportResult(path.name, sha256, "rejected", reason=str(exc))

    covered = coverage(statements)
    accounts = tuple(sorted({a for a, _, _ in statements}))
    first, last = min(covered), max(covered)
    claimed = sorted(covered)
    stored = rawstore.put_statement(data_dir, content)
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    for day in claimed:
        rawstore.write_manifest(
            data_dir,
            day,
            rawstore.Manifest(
                sha256=stored.sha256,
                size=stored.size,
                from_date=first,
                to_date=last,
                accounts=tuple(sorted(covered[day])),
                fetched_at=moment.isoformat(timespec="seconds"),
                source="inbox",
            ),
        )
    normalize_days(data_dir, claimed, NORMALIZED_TABLES, preparsed={stored.sha256: tables})
    wanted = sorted((a, d) for d in claimed for a in covered[d])
    result = ImportResult(
        path.name,
        sha256,
        "ingested",
        accounts=accounts,
        from_date=first,
        to_date=last,
        days_claimed=tuple(claimed),
        partitions=tuple(wanted),
    )
    ledger = {
        "sha256": sha256,
        "name": path.name,
        "ingested_at": moment.isoformat(timespec="seconds"),
        "accounts": list(accounts),
        "from_date": first.isoformat(),
        "to_date": last.isoformat(),
        "days_claimed": [d.isoformat() for d in claimed],
    }
    atomic_write_bytes(
        ledger_path(data_dir, sha256), (json.dumps(ledger, indent=1) + "\n").encode()
    )
    return result


def _free_target(folder: Path, name: str, sha256: str) -> Path:
    """``folder/name``, or ``folder/<stem>.<sha12><suffix>`` when that name is taken."""
    target = folder / name
    if not target.exists():
        return target
    stem, suffix = os.path.splitext(name)
    return folder / f"{stem}.{sha256[:12]}{suffix}"


def process_inbox_file(data_dir: Path, inbox_dir: Path, path: Path) -> ImportResult:
    """Import one inbox file, then move it to ``processed/`` (ingested or duplicate) or to
    ``rejected/`` with ``<name>.reason.txt``. Raises ValueError for a path outside ``inbox_dir``."""
    inbox_dir, path = Path(inbox_dir).resolve(), Path(path).resolve()
    if path.parent != inbox_dir:
        raise ValueError(f"{path} is not a file directly inside the inbox {inbox_dir}")
    result = import_statement(data_dir, path)
    if result.status == "rejected":
        folder = inbox_dir / REJECTED_DIR
        folder.mkdir(parents=True, exist_ok=True)
        target = _free_target(folder, path.name, result.sha256)
        atomic_write_bytes(
            target.with_name(target.name + REASON_SUFFIX), f"{result.reason}\n".encode()
        )
    else:
        folder = inbox_dir / PROCESSED_DIR
        folder.mkdir(parents=True, exist_ok=True)
        target = _free_target(folder, path.name, result.sha256)
    shutil.move(path, target)
    return ImportResult(**{**result.__dict__, "moved_to": target})


def pending_files(
    inbox_dir: Path, now: float | None = None, settle_s: float = SETTLE_SECONDS
) -> list[Path]:
    """Regular files directly in ``inbox_dir`` waiting to be ingested, oldest first.

    Skips hidden files, partial-download suffixes and files modified less than ``settle_s``
    seconds before ``now`` (epoch seconds).
    """
    inbox_dir = Path(inbox_dir)
    if not inbox_dir.is_dir():
        return []
    now = time.time() if now is None else now
    found = []
    for entry in inbox_dir.iterdir():
        if entry.name.startswith(".") or entry.name.endswith(IGNORED_SUFFIXES):
            continue
        if not entry.is_file():
            continue
        mtime = entry.stat().st_mtime
        if now - mtime >= settle_s:
            found.append((mtime, entry.name, entry))
    return [entry for _, _, entry in sorted(found)]
