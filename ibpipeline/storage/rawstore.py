"""Content-addressed, immutable store of raw Flex statements plus a manifest per report date.

Layout under ``<data_dir>/raw/flex``:

- ``statements/<sha256[:2]>/<sha256>.xml``: statement bytes, written once, never modified;
- ``by_date/<YYYY-MM-DD>.json``: which stored statement supplies each account's rows of that report
  date (``DayManifest``: a list of ``Manifest`` entries, newest first).

What an entry supplies is its *claims*: ``table -> accounts`` (the key ``*`` means every table).
A Flex Web Service fetch claims every table of the accounts of its FlexStatements for every day of
its window (``claims=None``, i.e. ``{"*": accounts}``); a hand-downloaded file claims exactly the
(table, account) pairs it has rows for on that day. Entries may also carry ``fallback`` claims:
rows dated outside the statement's period (IBKR's opening NAV row of the day before ``fromDate``),
used only where no entry claims that (table, account). Resolution (``DayManifest.supplier``): the
newest entry claiming a (table, account) supplies it, else the newest fallback. So a Flex query
that drops an account, a file of a single account, or a trades-only file never hides other rows.
With several Flex queries each entry names its ``query``; an account two queries deliver is
supplied by the query whose name sorts first, whichever was stored last (``DayManifest.yielding``).

Manifest updates are read-modify-write under an exclusive ``fcntl`` lock on ``manifests.lock``, so
concurrent writers (a Flex run and an import) never lose each other's entries.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Literal

from ibpipeline.storage import atomic_write_bytes

Source = Literal["flex", "inbox"]
SOURCES: tuple[str, ...] = ("flex", "inbox")
ALL_TABLES = "*"
"""Claims key meaning every table."""
Claims = Mapping[str, tuple[str, ...]]


class RawStoreError(Exception):
    """The raw store is missing data or holds data that fails verification."""


@dataclass(frozen=True)
class StoredStatement:
    """Result of ``put_statement``: hash, size in bytes, path, and whether bytes were written."""

    sha256: str
    size: int
    path: Path
    written: bool


def _claims(value: Mapping[str, Iterable[str]] | None) -> dict[str, tuple[str, ...]] | None:
    """Canonical claims: sorted tables, each with sorted unique accounts, empty ones dropped."""
    if value is None:
        return None
    return {t: tuple(sorted(set(a))) for t, a in sorted(value.items()) if a}


@dataclass(frozen=True)
class Manifest:
    """One stored statement supplying a report date.

    ``from_date``/``to_date`` are the statement's inclusive (effective) period; ``accounts`` the
    sorted ids it supplies anything for on the day; ``claims`` ``table -> accounts`` it supplies
    (None: every table of ``accounts``); ``fallback`` ``table -> accounts`` it supplies only where
    no entry claims them; ``fetched_at`` a UTC ISO-8601 instant; ``source`` ``flex`` or ``inbox``;
    ``query`` the name of the Flex query that delivered it when several are configured (None
    with a single query).
    """

    sha256: str
    size: int
    from_date: date
    to_date: date
    accounts: tuple[str, ...]
    fetched_at: str
    source: Source = "flex"
    claims: Claims | None = None
    fallback: Claims = field(default_factory=dict)
    query: str | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"manifest source must be one of {SOURCES}, got {self.source!r}")
        if self.from_date > self.to_date:
            raise ValueError(f"manifest from_date {self.from_date} is after to_date {self.to_date}")
        object.__setattr__(self, "claims", _claims(self.claims))
        object.__setattr__(self, "fallback", _claims(self.fallback) or {})
        if self.claims is not None:
            named = {a for c in (self.claims, self.fallback) for v in c.values() for a in v}
            object.__setattr__(self, "accounts", tuple(sorted(named)))

    @classmethod
    def of_rows(
        cls,
        base: Manifest,
        claims: Mapping[str, Iterable[str]],
        fallback: Mapping[str, Iterable[str]] | None = None,
    ) -> Manifest:
        """``base`` (statement, period, time, source) with explicit per-table claims."""
        return replace(base, accounts=(), claims=dict(claims), fallback=dict(fallback or {}))

    @property
    def strong(self) -> Claims:
        """``table -> accounts`` this entry takes over (``*``: every table)."""
        return {ALL_TABLES: self.accounts} if self.claims is None else self.claims

    def claimed(self, table: str) -> frozenset[str]:
        """Accounts whose ``table`` rows of the day this entry supplies."""
        strong = self.strong
        return frozenset(strong.get(table, ())) | frozenset(strong.get(ALL_TABLES, ()))

    def fallback_for(self, table: str) -> frozenset[str]:
        """Accounts whose ``table`` rows this entry supplies only when nobody claims them."""
        return frozenset(self.fallback.get(table, ()))

    def to_doc(self) -> dict:
        """JSON-ready dict (ISO dates)."""
        doc = {
            "sha256": self.sha256,
            "size": self.size,
            "from_date": self.from_date.isoformat(),
            "to_date": self.to_date.isoformat(),
            "accounts": list(self.accounts),
            "fetched_at": self.fetched_at,
            "source": self.source,
        }
        if self.claims is not None:
            doc["claims"] = {t: list(a) for t, a in self.claims.items()}
        if self.fallback:
            doc["fallback"] = {t: list(a) for t, a in self.fallback.items()}
        if self.query is not None:
            doc["query"] = self.query
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
                claims=doc.get("claims"),
                fallback=doc.get("fallback") or {},
                query=doc.get("query"),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RawStoreError(f"malformed manifest: {exc}") from exc

    def without(self, newer: Manifest) -> Manifest | None:
        """This entry minus what ``newer`` takes over; None when nothing of it is left.

        A whole-statement entry (``claims=None``) loses the accounts ``newer`` takes over for
        every table; per-table claims lose exactly the (table, account) pairs ``newer`` claims.
        Fallback claims are kept while anything of this entry's could still be used.
        """
        every = set(newer.strong.get(ALL_TABLES, ()))
        if self.claims is None:
            if newer.claims is not None and not every:
                return self  # a per-table entry never strips a whole-statement one
            left = tuple(a for a in self.accounts if a not in every)
            return replace(self, accounts=left) if left else None
        claims = {
            t: [a for a in accs if a not in every and a not in newer.claimed(t)]
            for t, accs in self.claims.items()
        }
        fallback = {
            t: [
                a
                for a in accs
                if a not in every and a not in newer.claimed(t) and a not in newer.fallback_for(t)
            ]
            for t, accs in self.fallback.items()
        }
        out = replace(self, claims=claims, fallback=fallback)
        return out if out.accounts else None

    def same_content(self, other: Manifest) -> bool:
        """True when both point at the same statement/period/claims (``fetched_at`` ignored)."""
        return replace(self, fetched_at="") == replace(other, fetched_at="")


@dataclass(frozen=True)
class DayManifest:
    """Every statement supplying one report date, newest first (see the module docstring)."""

    statements: tuple[Manifest, ...]

    @property
    def newest(self) -> Manifest:
        """The most recently stored statement of the day."""
        return self.statements[0]

    @property
    def accounts(self) -> tuple[str, ...]:
        """Every account with a statement for the day, sorted."""
        return tuple(sorted({a for m in self.statements for a in m.accounts}))

    def taking(self, manifest: Manifest) -> DayManifest:
        """This day after storing ``manifest``: it supplies what it claims, older entries keep
        the rest (entries left with nothing are dropped).

        Between Flex queries (entries with a ``query``) the order of storing does not matter: an
        account delivered by two queries is supplied by the query whose name sorts first
        (:meth:`yielding`), so parallel per-query steps give the same manifests in any order.
        """
        manifest = self.yielding(manifest)
        if manifest is None:
            return self
        rest = (m.without(manifest) for m in self.statements)
        return DayManifest((manifest, *(m for m in rest if m is not None)))

    def yielding(self, manifest: Manifest) -> Manifest | None:
        """``manifest`` without the accounts that an entry of a Flex query named before its own
        already supplies (None when nothing is left). Unchanged for any other entry."""
        if manifest.query is None or manifest.claims is not None:
            return manifest
        taken = {
            a
            for m in self.statements
            if m.source == "flex" and m.query is not None and m.query < manifest.query
            for a in m.accounts
        }
        if not taken & set(manifest.accounts):
            return manifest
        left = tuple(a for a in manifest.accounts if a not in taken)
        return replace(manifest, accounts=left) if left else None

    def suppliers(self, table: str, present: Mapping[str, Iterable[str]]) -> dict[str, str]:
        """``account -> sha256`` of the statement supplying each account's ``table`` rows.

        ``present``: sha256 -> accounts that have ``table`` rows of the day in that statement
        (whole-statement entries supply, as a fallback, rows of accounts they do not name, such
        as sub-account rows ``U1234567F`` inside ``U1234567``'s statement). Newest claim wins,
        then the newest fallback.
        """
        out: dict[str, str] = {}
        for m in self.statements:
            for account in m.claimed(table):
                out.setdefault(account, m.sha256)
        for m in self.statements:
            extra = set(m.fallback_for(table))
            if m.claims is None:
                extra |= set(present.get(m.sha256, ()))
            for account in sorted(extra):
                out.setdefault(account, m.sha256)
        return out

    def same_content(self, other: DayManifest) -> bool:
        """Same statements, periods, claims and sources (``fetched_at`` ignored)."""
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


def stored_statement(data_dir: Path, sha256: str) -> Path:
    """The path of the stored statement ``sha256`` (not verified: see ``verify_statement``).

    Raises RawStoreError when it is missing (as ``read_statement``)."""
    path = statement_path(data_dir, sha256)
    if not path.is_file():
        raise RawStoreError(f"statement {sha256} is not in the raw store ({path})")
    return path


def verify_statement(data_dir: Path, sha256: str, digest: str | None = None) -> None:
    """Raise RawStoreError (as ``read_statement``) unless the stored bytes of ``sha256`` hash to
    it: ``digest`` is their hash when the caller computed it while reading them (a streaming
    parse), else the file is hashed here in 1 MiB chunks (never all bytes in memory)."""
    path = stored_statement(data_dir, sha256)
    if digest is None:
        hasher = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                hasher.update(chunk)
        digest = hasher.hexdigest()
    if digest != sha256:
        raise RawStoreError(f"statement file {path} is corrupt: content hash differs from its name")


@contextlib.contextmanager
def manifest_lock(data_dir: Path) -> Iterator[None]:
    """Hold the exclusive lock of the manifests (``manifests.lock``, ``fcntl.flock``) while every
    read-modify-write of them runs, across processes; released when the holder dies."""
    folder = flex_root(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "manifests.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _update_day(data_dir: Path, day: date, manifest: Manifest) -> bool:
    """Caller holds ``manifest_lock``."""
    current = read_manifest(data_dir, day)
    updated = DayManifest((manifest,)) if current is None else current.taking(manifest)
    if current is not None and current.same_content(updated):
        return False
    atomic_write_bytes(manifest_path(data_dir, day), updated.to_json())
    return True


def write_manifest(data_dir: Path, day: date, manifest: Manifest) -> bool:
    """Make ``manifest`` supply what it claims on report date ``day``; return True when the file
    changed. Everything else of the day keeps its statement (``DayManifest.taking``).

    Storing the same statement again (ignoring ``fetched_at``) writes nothing. A whole-statement
    entry (``claims=None``) must cover ``day`` with its period.
    """
    return write_day_manifests(data_dir, {day: manifest}) == 1


def write_manifests(data_dir: Path, days: Iterable[date], manifest: Manifest) -> int:
    """``write_manifest`` for every day (one lock for all); return how many files changed."""
    return write_day_manifests(data_dir, dict.fromkeys(days, manifest))


def write_day_manifests(data_dir: Path, entries: Mapping[date, Manifest]) -> int:
    """Store one entry per report date under one lock; return how many manifest files changed."""
    for day, manifest in entries.items():
        if manifest.claims is None and not manifest.from_date <= day <= manifest.to_date:
            raise ValueError(
                f"report date {day} is outside the statement period "
                f"{manifest.from_date}..{manifest.to_date}"
            )
    with manifest_lock(data_dir):
        return sum(_update_day(data_dir, day, m) for day, m in sorted(entries.items()))


def read_manifest(data_dir: Path, day: date) -> DayManifest | None:
    """The manifest of report date ``day``, or None when no statement covers that date."""
    path = manifest_path(data_dir, day)
    try:
        return DayManifest.from_json(path.read_bytes())
    except FileNotFoundError:
        return None
