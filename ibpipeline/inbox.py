"""Ingest hand-downloaded Flex statements through the same raw -> normalized path as fetches.

A file is parsed once (``ibpipeline.flex.parse``), copied into the content-addressed raw store,
and recorded in the per-date manifests (``source="inbox"``) as the supplier of exactly the
(table, account, day) triples it has rows for (``claims_by_day``); then the normalized day files
of those days are rebuilt (``normalized.normalize_days``). A ledger entry
``<data_dir>/raw/inbox/<sha256>.json`` written last marks the content as ingested, so the same
bytes dropped again (under any name) are a duplicate and change nothing.

Rules (docs/tolerance.md, "Import rules"): every account id a row carries is kept (sub-accounts
such as ``U1234567F`` inside ``U1234567``'s statement included); the newest stored statement of a
(table, account, day) wins, so a file that has no rows for an account-day (or only trades) never
hides what an earlier file stored there; rows dated outside their statement's period (IBKR's
opening NAV row of the day before ``fromDate``) are stored as a *fallback* for their own day, used
only where no statement claims it. Parse warnings (values that did not convert, a wrong
``count``, a clipped period, a section not imported, position rows without a price) are reported
in the result, never a reason to reject the file.

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

import pyarrow as pa

from ibpipeline.assets.normalized import (
    NORMALIZED_TABLES,
    TableWarning,
    normalize_days,
    parsed_tables,
    statement_label,
    statement_problems,
)
from ibpipeline.flex.parse import FlexParseError, ParsedFlex, StatementInfo, parse_statement
from ibpipeline.flex.positions import unpriced_warnings
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
    ``moved_to`` is set only by ``process_inbox_file``. ``warnings``: every warning line (the
    parser's, then the import's own); ``problems``: the same warnings filed under the normalized
    table each concerns (statement-level ones under ``account_info``), with the number of values
    each stands for, as the normalized step reports them."""

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
    warnings: tuple[str, ...] = ()
    rows: int = 0
    problems: tuple[TableWarning, ...] = ()

    def table_problems(self, table: str) -> list[TableWarning]:
        """The warnings filed under ``table``."""
        return [w for w in self.problems if w.table == table]

    @property
    def warning_values(self) -> int:
        """Values not converted + statement-level and import warnings."""
        return sum(w.values for w in self.problems)

    def summary(self) -> str:
        """One human-readable line."""
        if self.status == "rejected":
            return f"{self.name}: rejected ({self.reason})"
        if self.status == "duplicate":
            return f"{self.name}: duplicate of already ingested {self.sha256[:12]}, nothing written"
        period = f"{self.from_date}..{self.to_date}" if self.from_date else "no dated rows"
        return (
            f"{self.name}: ingested {self.sha256[:12]} accounts {list(self.accounts)} "
            f"{period}: {self.rows} rows, {len(self.days_claimed)} days, "
            f"{len(self.partitions)} account-days read from it, {len(self.warnings)} warning(s)"
        )


def ledger_path(data_dir: Path, sha256: str) -> Path:
    """``<data_dir>/raw/inbox/<sha256>.json``: present once the content was ingested."""
    rawstore.statement_path(data_dir, sha256)  # validates the hash
    return Path(data_dir) / "raw" / "inbox" / f"{sha256}.json"


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def account_periods(statements: Iterable[StatementInfo]) -> dict[str | None, set[date]]:
    """Report days each account's statement covers (effective periods); key None: the whole
    file's span, the period of rows whose account has no FlexStatement of its own."""
    out: dict[str | None, set[date]] = defaultdict(set)
    statements = list(statements)
    for s in statements:
        out[s.account_id].update(_days(s.from_date, s.to_date))
    if statements:
        first = min(s.from_date for s in statements)
        out[None] = set(_days(first, max(s.to_date for s in statements)))
    return dict(out)


@dataclass(frozen=True)
class DayClaims:
    """What a file supplies on one report day: ``table -> accounts`` it has rows for inside
    their statement's period (``claims``) and outside it (``fallback``)."""

    claims: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    fallback: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


def claims_by_day(
    tables: dict[str, pa.Table], statements: Iterable[StatementInfo]
) -> dict[date, DayClaims]:
    """Day -> the (table, account) pairs the file has rows for (see ``DayClaims``)."""
    periods = account_periods(statements)
    out: dict[date, DayClaims] = defaultdict(DayClaims)
    for name, table in tables.items():
        if table.num_rows == 0:
            continue
        pairs = table.group_by(["account_id", "date"]).aggregate([])
        for account, day in zip(
            pairs["account_id"].to_pylist(), pairs["date"].to_pylist(), strict=True
        ):
            period = periods.get(account, periods.get(None, set()))
            target = out[day].claims if day in period else out[day].fallback
            target[name].add(account)
    return dict(out)


def _parse(content: bytes, sha256: str) -> tuple[ParsedFlex, dict[str, pa.Table]]:
    """The parsed statement and its normalized tables; raises InboxRejection."""
    try:
        parsed = parse_statement(content, source_sha256=sha256)
        for s in parsed.statements:
            validate_account_id(s.account_id)
        if not parsed.statements:
            raise InboxRejection("no FlexStatement element: not an Activity Flex statement")
        return parsed, parsed_tables(parsed)
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
        parsed, tables = _parse(content, sha256)
    except InboxRejection as exc:
        return ImportResult(path.name, sha256, "rejected", reason=str(exc))

    by_day = claims_by_day(tables, parsed.statements)
    own: list[str] = []  # the import's own warnings (statement-level)
    outside = sorted(d for d, c in by_day.items() if c.fallback)
    if outside:
        own.append(
            f"rows dated outside their statement's period on {len(outside)} day(s) "
            f"({outside[0]}..{outside[-1]}): stored where no other statement supplies them"
        )
    if not by_day:
        own.append("the file has no dated rows: nothing to store besides the raw bytes")
    unpriced = [line for line, _ in unpriced_warnings(tables["positions_daily"])]
    warnings = [*parsed.warnings, *unpriced, *own]
    label = statement_label(sha256)
    problems = [
        *statement_problems(parsed, tables["positions_daily"]),
        *(TableWarning("account_info", f"{label}: {line}") for line in own),
    ]
    stored = rawstore.put_statement(data_dir, content)
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    first = min(s.from_date for s in parsed.statements)
    last = max(s.to_date for s in parsed.statements)
    base = rawstore.Manifest(
        sha256=stored.sha256,
        size=stored.size,
        from_date=first,
        to_date=last,
        accounts=(),
        fetched_at=moment.isoformat(timespec="seconds"),
        source="inbox",
    )
    rawstore.write_day_manifests(
        data_dir,
        {d: rawstore.Manifest.of_rows(base, c.claims, c.fallback) for d, c in by_day.items()},
    )
    claimed = sorted(by_day)
    if claimed:
        normalize_days(
            data_dir,
            claimed,
            NORMALIZED_TABLES,
            preparsed={stored.sha256: tables},
            changed={d: {*c.claims, *c.fallback} for d, c in by_day.items()},
        )
    wanted = sorted(
        {
            (a, d)
            for d, c in by_day.items()
            for part in (c.claims, c.fallback)
            for v in part.values()
            for a in v
        }
    )
    accounts = tuple(sorted({a for a, _ in wanted} | {s.account_id for s in parsed.statements}))
    result = ImportResult(
        path.name,
        sha256,
        "ingested",
        accounts=accounts,
        from_date=first,
        to_date=last,
        days_claimed=tuple(claimed),
        partitions=tuple(wanted),
        warnings=tuple(warnings),
        rows=sum(t.num_rows for t in tables.values()),
        problems=tuple(problems),
    )
    ledger = {
        "sha256": sha256,
        "name": path.name,
        "ingested_at": moment.isoformat(timespec="seconds"),
        "accounts": list(accounts),
        "from_date": first.isoformat(),
        "to_date": last.isoformat(),
        "days_claimed": [d.isoformat() for d in claimed],
        "warnings": list(warnings),
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
