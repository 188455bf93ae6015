"""Content-addressed, immutable store of raw Flex statements plus a manifest per report date.

Layout under ``<data_dir>/raw/flex``:

- ``statements/<sha256[:2]>/<sha256>.xml``: statement bytes, written once, never modified;
- ``by_date/<YYYY-MM-DD>.json``: which statement covers that report date (``Manifest``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
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
    """Which stored statement covers a report date.

    ``from_date``/``to_date`` are the statement's inclusive period; ``accounts`` the sorted account
    ids it contains; ``fetched_at`` a UTC ISO-8601 instant; ``source`` ``flex`` or ``inbox``.
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

    def to_json(self) -> bytes:
        """Canonical JSON bytes (sorted keys, ISO dates)."""
        doc = asdict(self)
        doc["from_date"] = self.from_date.isoformat()
        doc["to_date"] = self.to_date.isoformat()
        doc["accounts"] = list(self.accounts)
        return (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse ``to_json`` output; raises RawStoreError on malformed content."""
        try:
            doc = json.loads(data)
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
    """Point report date ``day`` at ``manifest``; return True when the file changed.

    A manifest with the same content (ignoring ``fetched_at``) is left untouched, so re-fetching
    identical bytes writes nothing. ``day`` must lie inside the manifest's period.
    """
    if not manifest.from_date <= day <= manifest.to_date:
        raise ValueError(
            f"report date {day} is outside the statement period "
            f"{manifest.from_date}..{manifest.to_date}"
        )
    current = read_manifest(data_dir, day)
    if current is not None and current.same_content(manifest):
        return False
    atomic_write_bytes(manifest_path(data_dir, day), manifest.to_json())
    return True


def write_manifests(data_dir: Path, days: Iterable[date], manifest: Manifest) -> int:
    """``write_manifest`` for every day; return how many manifest files changed."""
    return sum(write_manifest(data_dir, d, manifest) for d in days)


def read_manifest(data_dir: Path, day: date) -> Manifest | None:
    """The manifest of report date ``day``, or None when that date was never fetched."""
    path = manifest_path(data_dir, day)
    try:
        return Manifest.from_json(path.read_bytes())
    except FileNotFoundError:
        return None
