"""Content-addressed, immutable store of raw Flex statements plus a manifest per report date.

Layout under ``<data_dir>/raw/flex``:

- ``statements/<sha256[:2]>/<sha256>.xml``: statement bytes, written once, never modified;
- ``by_date/<YYYY-MM-DD>.json``: which stored statement supplies each account's rows of that report
  date (``DayManifest``: a list of ``Manifest`` entries, newest first, with disjoint accounts).

The most recently stored statement that covers an (account, report date) is the one used: storing a
statement takes over exactly the accounts it contains, and every other account keeps its statement.
So a Flex query that drops an account, or a hand-downloaded file of a single account, never hides
the rows of another account.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path
from typing import Literal

from ibpipeline.storage import atomic_write_bytes

Source = Literal["flex", "inbox"]
SOURCES: tuple[str, ...] = ("flex", "inbox")


class RawStoreError(Exception):
    """The raw store is missing data or holds data that fails verification."""


@dataclass(frozen=True)
class StoredStatement:
    """Result of ``put_statement``: hash, size in bytes, path, and whether bytes were written."""

    sha256: str
    size: int
    path: Path
    written: bool


@dataclass(frozen=True)
class Manifest:
    """One stored statement supplying a report date.

    ``from_date``/``to_date`` are the statement's inclusive period; ``accounts`` the sorted account
    ids it supplies for the day; ``fetched_at`` a UTC ISO-8601 instant; ``source`` ``flex`` or
    ``inbox``.
    """

    sha256: str
    size: int
    from_date: date
    to_date: date
    accounts: tuple[str, ...]
    fetched_at: str
    source: Source = "flex"

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"manifest source must be one of {SOURCES}, got {self.source!r}")
        if self.from_date > self.to_date:
            raise ValueError(f"manifest from_date {self.from_date} is after to_date {self.to_date}")

    def to_doc(self) -> dict:
        """JSON-ready dict (ISO dates)."""
        doc = asdict(self)
        doc["from_date"] = self.from_date.isoformat()
        doc["to_date"] = self.to_date.isoformat()
        doc["accounts"] = list(self.accounts)
        return doc

    @classmethod
    def from_doc(cls, doc: dict) -> Manifest:
        """Parse ``to_doc`` output; raises RawStoreError on malformed content."""
        try:
            return cls(
                sha256=str(doc["sha256"]),
                size=int(doc["size"]),
                from_date=date.fromisoformat(doc["from_date"]),
                to_date=date.fromisoformat(doc["to_date"]),
                accounts=tuple(doc["accounts"]),
                fetched_at=str(doc["fetched_at"]),
                source=doc.get("source", "flex"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise RawStoreError(f"malformed manifest: {exc}") from exc

    def without(self, account_ids: Iterable[str]) -> Manifest:
        """This entry minus ``account_ids``."""
        taken = set(account_ids)
        return replace(self, accounts=tuple(a for a in self.accounts if a not in taken))

    def same_content(self, other: Manifest) -> bool:
        """True when both point at the same statement/period/accounts (``fetched_at`` ignored)."""
        return (
            self.sha256,
            self.size,
            self.from_date,
            self.to_date,
            self.accounts,
            self.source,
        ) == (
            other.sha256,
            other.size,
            other.from_date,
            other.to_date,
            other.accounts,
            other.source,
        )


@dataclass(frozen=True)
class DayManifest:
    """Every statement supplying one report date, newest first; their ``accounts`` are disjoint."""

    statements: tuple[Manifest, ...]

    @property
    def newest(self) -> Manifest:
        """The most recently stored statement of the day."""
        return self.statements[0]

    @property
    def accounts(self) -> tuple[str, ...]:
        """Every account with a statement for the day, sorted."""
        return tuple(sorted(a for m in self.statements for a in m.accounts))

    def taking(self, manifest: Manifest) -> DayManifest:
        """This day after storing ``manifest``: it supplies its accounts, the others keep theirs."""
        rest = (m.without(manifest.accounts) for m in self.statements)
        return DayManifest((manifest, *(m for m in rest if m.accounts)))

    def same_content(self, other: DayManifest) -> bool:
        """Same statements, periods, accounts and sources (``fetched_at`` ignored)."""
        return len(self.statements) == len(other.statements) and all(
            a.same_content(b) for a, b in zip(self.statements, other.statements, strict=True)
        )

    def to_json(self) -> bytes:
        """Canonical JSON bytes (sorted keys, ISO dates)."""
        doc = {"statements": [m.to_doc() for m in self.statements]}
        return (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> DayManifest:
        """Parse ``to_json`` output; raises RawStoreError on malformed content."""
        try:
            doc = json.loads(data)
            statements = tuple(Manifest.from_doc(m) for m in doc["statements"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RawStoreError(f"malformed manifest: {exc}") from exc
        if not statements:
            raise RawStoreError("malformed manifest: no statement")
        return cls(statements)


def flex_root(data_dir: Path) -> Path:
    """``<data_dir>/raw/flex``."""
    return Path(data_dir) / "raw" / "flex"


def sha256_hex(content: bytes) -> str:
    """Lower-case hex SHA-256 of ``content``."""
    return hashlib.sha256(content).hexdigest()


def statement_path(data_dir: Path, sha256: str) -> Path:
    """Where the statement with this hash lives."""
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a lower-case hex sha256: {sha256!r}")
    return flex_root(data_dir) / "statements" / sha256[:2] / f"{sha256}.xml"


def manifest_path(data_dir: Path, day: date) -> Path:
    """Where the manifest of report date ``day`` lives."""
    return flex_root(data_dir) / "by_date" / f"{day.isoformat()}.json"


def put_statement(data_dir: Path, content: bytes) -> StoredStatement:
    """Store ``content`` under its hash; identical bytes already stored are not written again."""
    if not content:
        raise ValueError("refusing to store an empty statement")
    digest = sha256_hex(content)
    path = statement_path(data_dir, digest)
    if path.exists() and path.stat().st_size == len(content):
        return StoredStatement(digest, len(content), path, written=False)
    atomic_write_bytes(path, content)
    return StoredStatement(digest, len(content), path, written=True)


def read_statement(data_dir: Path, sha256: str) -> bytes:
    """Return the stored bytes of ``sha256``, verifying the hash.

    Raises RawStoreError when the statement is missing or its bytes do not hash to ``sha256``.
    """
    path = statement_path(data_dir, sha256)
    try:
        content = path.read_bytes()
    except FileNotFoundError as exc:
        raise RawStoreError(f"statement {sha256} is not in the raw store ({path})") from exc
    if sha256_hex(content) != sha256:
        raise RawStoreError(f"statement file {path} is corrupt: content hash differs from its name")
    return content


def write_manifest(data_dir: Path, day: date, manifest: Manifest) -> bool:
    """Make ``manifest`` supply its accounts on report date ``day``; return True when the file
    changed. Other accounts of the day keep their statement (``DayManifest.taking``).

    Storing the same statement again (ignoring ``fetched_at``) writes nothing. ``day`` must lie
    inside the manifest's period.
    """
    if not manifest.from_date <= day <= manifest.to_date:
        raise ValueError(
            f"report date {day} is outside the statement period "
            f"{manifest.from_date}..{manifest.to_date}"
        )
    current = read_manifest(data_dir, day)
    updated = DayManifest((manifest,)) if current is None else current.taking(manifest)
    if current is not None and current.same_content(updated):
        return False
    atomic_write_bytes(manifest_path(data_dir, day), updated.to_json())
    return True


def write_manifests(data_dir: Path, days: Iterable[date], manifest: Manifest) -> int:
    """``write_manifest`` for every day; return how many manifest files changed."""
    return sum(write_manifest(data_dir, d, manifest) for d in days)


def read_manifest(data_dir: Path, day: date) -> DayManifest | None:
    """The manifest of report date ``day``, or None when no statement covers that date."""
    path = manifest_path(data_dir, day)
    try:
        return DayManifest.from_json(path.read_bytes())
    except FileNotFoundError:
        return None
