"""Sensors: account discovery and the Flex inbox.

- ``account_discovery_sensor`` asks each account source which accounts exist (the accounts of the
  newest stored Flex statement and the managed accounts of every configured IB Gateway), registers
  new valid ids in the ``account`` dynamic partitions and requests ONE ``flex_daily_job`` range run
  re-fetching and re-normalizing the history (statements fetched before an account joined the
  query lack it; one Flex request per 365 days, whatever the number of accounts). Invalid
  ids are rejected with a logged reason; accounts that disappear from every source or report a
  ``dateClosed`` are marked closed (never removed), but not while a gateway is unreachable. State:
  the sensor cursor, mirrored to ``<data_dir>/state/accounts.json``.
- ``inbox_sensor`` requests one ``inbox_import_job`` run per settled file in the inbox folder;
  ``marts_after_inbox`` follows each successful import with ONE ``marts_job`` range run over the
  report days the file claimed, so the marts include hand-downloaded history.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

import dagster as dg

from ibpipeline import inbox, settings
from ibpipeline.assets import raw_flex_statement
from ibpipeline.assets.marts import marts_job
from ibpipeline.automation.jobs import flex_daily_job, inbox_import_job
from ibpipeline.automation.ranges import range_tags, ready_report_day
from ibpipeline.gateway.collector import list_managed_accounts
from ibpipeline.partitions import (
    ACCOUNT_DIMENSION,
    InvalidAccountIdError,
    accounts,
    daily,
    validate_account_id,
)
from ibpipeline.resources import DataDirResource, GatewayResource
from ibpipeline.storage import atomic_write_bytes, parquet, rawstore

ACCOUNT_DISCOVERY_SENSOR = "account_discovery_sensor"
INBOX_SENSOR = "inbox_sensor"
MARTS_AFTER_INBOX_SENSOR = "marts_after_inbox"
NEW_ACCOUNTS_TAG = "ibpipeline/new_accounts"
"""On a discovery run: the new account ids it backfills (space-separated; at most 20 listed)."""
STATE_FILE = Path("state") / "accounts.json"

Clock = Callable[[], datetime]


# account discovery: state ------------------------------------------------------------------


@dataclass(frozen=True)
class AccountRecord:
    """What discovery knows about one account. Dates are ISO strings; ``history`` is the raw
    range requested for it (``start..end``), ``adopted`` when its history was already stored."""

    first_seen: str
    status: Literal["open", "closed"] = "open"
    closed_on: str | None = None
    closed_reason: str | None = None
    history: str | None = None


@dataclass(frozen=True)
class DiscoveryState:
    """The sensor cursor: known accounts and the rejected ids (with their reason)."""

    accounts: Mapping[str, AccountRecord] = field(default_factory=dict)
    rejected: Mapping[str, str] = field(default_factory=dict)

    def to_cursor(self) -> str:
        """Canonical JSON (sorted keys)."""
        doc = {
            "version": 1,
            "accounts": {k: asdict(v) for k, v in sorted(self.accounts.items())},
            "rejected": dict(sorted(self.rejected.items())),
        }
        return json.dumps(doc, sort_keys=True)

    @classmethod
    def from_cursor(cls, cursor: str | None) -> DiscoveryState:
        """Parse ``to_cursor`` output; None or empty is the empty state. Raises ValueError on a
        cursor of another format."""
        if not cursor:
            return cls()
        try:
            doc = json.loads(cursor)
            known = {k: AccountRecord(**v) for k, v in doc["accounts"].items()}
            return cls(known, dict(doc["rejected"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"unreadable {ACCOUNT_DISCOVERY_SENSOR} cursor: {exc}") from exc


@dataclass(frozen=True)
class Discovery:
    """One evaluation: the new state and what changed."""

    state: DiscoveryState
    new: tuple[str, ...] = ()
    adopted: tuple[str, ...] = ()
    rejected: Mapping[str, str] = field(default_factory=dict)
    closed: Mapping[str, str] = field(default_factory=dict)
    reopened: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.new or self.adopted or self.rejected or self.closed or self.reopened)


def discover(
    state: DiscoveryState,
    observed: Mapping[str, Sequence[str]],
    closed_on: Mapping[str, date],
    as_of: date,
    has_history: Callable[[str], bool],
    history: str | None,
    unanswered: Sequence[str] = (),
) -> Discovery:
    """Compare the sources' account ids with ``state``.

    ``observed``: source name -> ids it reports (only sources that answered); ``closed_on``:
    account -> dateClosed reported by its latest statement; ``has_history``: whether an account's
    history is already normalized (then it is adopted without a backfill); ``history``: the range
    label recorded for new accounts; ``as_of``: the report date the sources describe;
    ``unanswered``: sources that were asked but did not answer. An account seen by any source
    (e.g. only by a gateway) is new when unknown, whatever the source. An open known account absent
    from every answering source is closed, unless ``unanswered`` is non-empty (it may be on a silent
    source: absence closes nothing that tick; ``dateClosed`` still does); a closed one that
    reappears is reopened. Invalid ids are rejected once, whichever source reports them.
    """
    known = dict(state.accounts)
    rejected_all = dict(state.rejected)
    seen: set[str] = set()
    new, adopted, reopened = [], [], []
    rejected: dict[str, str] = {}
    for source, ids in sorted(observed.items()):
        for raw_id in ids:
            try:
                account_id = validate_account_id(raw_id)
            except InvalidAccountIdError as exc:
                if raw_id not in rejected_all:
                    rejected[raw_id] = rejected_all[raw_id] = f"from {source}: {exc}"
                continue
            seen.add(account_id)
    for account_id in sorted(seen):
        record = known.get(account_id)
        if record is None:
            if has_history(account_id):
                adopted.append(account_id)
                known[account_id] = AccountRecord(as_of.isoformat(), history="adopted")
            else:
                new.append(account_id)
                known[account_id] = AccountRecord(as_of.isoformat(), history=history)
        elif record.status == "closed" and account_id not in closed_on:
            reopened.append(account_id)
            known[account_id] = replace(record, status="open", closed_on=None, closed_reason=None)
    closed: dict[str, str] = {}
    for account_id, record in sorted(known.items()):
        if record.status == "closed":
            continue
        if account_id in closed_on:
            reason = f"dateClosed {closed_on[account_id].isoformat()} in its latest statement"
            day = closed_on[account_id]
        elif observed and not unanswered and account_id not in seen:
            reason = f"absent from {', '.join(sorted(observed))} as of {as_of.isoformat()}"
            day = as_of
        else:
            continue
        closed[account_id] = reason
        known[account_id] = replace(
            record, status="closed", closed_on=day.isoformat(), closed_reason=reason
        )
    return Discovery(
        DiscoveryState(known, rejected_all),
        tuple(new),
        tuple(adopted),
        rejected,
        closed,
        tuple(reopened),
    )


# account discovery: sources ----------------------------------------------------------------


def latest_flex_manifest(data_dir: Path) -> tuple[date, rawstore.DayManifest] | None:
    """The newest report date supplied by a Flex fetch, and its manifest (whose ``accounts`` are
    every account of that day, also those a later inbox file took over)."""
    folder = rawstore.flex_root(data_dir) / "by_date"
    if not folder.is_dir():
        return None
    days = sorted((p.stem for p in folder.glob("*.json")), reverse=True)
    for stem in days:
        try:
            day = date.fromisoformat(stem)
        except ValueError:
            continue
        manifest = rawstore.read_manifest(data_dir, day)
        if manifest is not None and any(m.source == "flex" for m in manifest.statements):
            return day, manifest
    return None


def missing_flex_queries(manifest: rawstore.DayManifest) -> list[str]:
    """``flex query <name>`` for each configured query (when several) without an entry in
    ``manifest`` (its fetch failed or it delivered nothing): its accounts' absence closes none."""
    queries = settings.flex_queries()
    if len(queries) < 2:
        return []
    present = {m.query for m in manifest.statements if m.source == "flex"}
    return [f"flex query {q.name}" for q in queries if q.name not in present]


def closed_dates(data_dir: Path, account_ids: Sequence[str], day: date) -> dict[str, date]:
    """``dateClosed`` of each account in the normalized ``account_info`` rows of ``day`` (accounts
    without a row that day or without a close date are left out)."""
    table = parquet.read_day("account_info", day, data_dir=data_dir)
    if table is None:
        return {}
    wanted = set(account_ids)
    out: dict[str, date] = {}
    for account_id, closed in zip(
        table["account_id"].to_pylist(), table["date_closed"].to_pylist(), strict=True
    ):
        if account_id in wanted and closed is not None:
            out[account_id] = max(closed, out.get(account_id, closed))
    return out


def has_normalized_history(data_dir: Path, start: date) -> Callable[[str], bool]:
    """Predicate: the account has a ``nav_daily`` row in the first week from ``start`` (its
    history was normalized already, e.g. by a backfill before discovery was turned on; a week so
    that a start on a weekend or holiday still finds the first business day)."""
    present: set[str] = set()
    for offset in range(7):
        table = parquet.read_day("nav_daily", start + timedelta(days=offset), data_dir=data_dir)
        if table is not None:
            present.update(table["account_id"].to_pylist())
    return present.__contains__


def write_state_file(data_dir: Path, state: DiscoveryState) -> Path:
    """Mirror the discovery state to ``<data_dir>/state/accounts.json`` (atomic); return the path."""
    path = Path(data_dir) / STATE_FILE
    doc = json.loads(state.to_cursor())
    atomic_write_bytes(path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
    return path


def gateway_accounts(gateway: GatewayResource) -> dict[str, list[str] | str]:
    """Source ``gateway:<host:port>`` -> managed account ids, or the error text when unreachable;
    empty when no gateway is configured. Raises GatewayConfigError on a malformed list."""
    if not gateway.gateways:
        return {}
    answers = list_managed_accounts(
        gateway.addresses(), client_id=gateway.client_id, timeout=gateway.timeout_s
    )
    return {f"gateway:{address}": answer for address, answer in answers.items()}


def new_accounts_tag(account_ids: Sequence[str]) -> str:
    """``NEW_ACCOUNTS_TAG`` value: the ids, or the first 20 and how many more."""
    listed = " ".join(account_ids[:20])
    return listed if len(account_ids) <= 20 else f"{listed} (+{len(account_ids) - 20} more)"


def history_window(today: date, start: date) -> tuple[date, date] | None:
    """``(start, today)`` clamped to the daily partitions; None when empty."""
    start = max(start, daily.start.date())
    return (start, today) if start <= today else None


def build_account_discovery_sensor(
    clock: Clock = lambda: datetime.now(UTC),
    name: str = ACCOUNT_DISCOVERY_SENSOR,
    minimum_interval_seconds: int = 300,
) -> dg.SensorDefinition:
    """The discovery sensor; ``clock`` (tz-aware) decides the last report day of a backfill."""

    @dg.sensor(
        name=name,
        job=flex_daily_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            "Registers accounts found in the newest Flex statement or on a configured IB "
            "Gateway, re-fetches and re-normalizes the history for new ones (one flex_daily_job "
            "range run), marks closed accounts (not while a gateway is unreachable)."
        ),
    )
    def _sensor(
        context: dg.SensorEvaluationContext, data_dir: DataDirResource, gateway: GatewayResource
    ) -> dg.SensorResult | dg.SkipReason:
        root = data_dir.root()
        latest = latest_flex_manifest(root)
        if latest is None:
            return dg.SkipReason("no stored Flex statement yet: nothing to discover")
        as_of, manifest = latest
        state = DiscoveryState.from_cursor(context.cursor)
        today = ready_report_day(clock(), settings.schedule_timezone())
        window = history_window(today, settings.history_start())
        label = f"{window[0]}..{window[1]}" if window else None
        observed: dict[str, Sequence[str]] = {"flex": list(manifest.accounts)}
        unanswered = missing_flex_queries(manifest)
        for source in unanswered:
            context.log.warning(
                f"{source} has no statement for {as_of}, no account closed this tick"
            )
        for source, answer in gateway_accounts(gateway).items():
            if isinstance(answer, str):
                unanswered.append(source)
                context.log.warning(f"{source} unreachable, no account closed this tick: {answer}")
            else:
                observed[source] = answer
        closing = closed_dates(root, [a for a in manifest.accounts if _is_valid(a)], as_of)
        found = discover(
            state,
            observed,
            closing,
            as_of,
            has_normalized_history(root, window[0]) if window else lambda _: True,
            label,
            unanswered,
        )
        for raw_id, reason in found.rejected.items():
            context.log.warning(f"rejected account id {raw_id!r}: {reason}")
        for account_id, reason in found.closed.items():
            context.log.info(f"account {account_id} closed: {reason} (partitions kept)")
        for account_id in found.reopened:
            context.log.info(f"account {account_id} reopened: listed again as of {as_of}")
        for account_id in found.adopted:
            context.log.info(f"account {account_id} adopted: its history is already normalized")
        registered = set(context.instance.get_dynamic_partitions(ACCOUNT_DIMENSION))
        to_add = [a for a in (*found.new, *found.adopted) if a not in registered]
        run_requests = []
        if found.new and window is not None:
            context.log.info(f"new accounts {list(found.new)}: re-fetching history {label}")
            digest = hashlib.sha256(" ".join(found.new).encode()).hexdigest()[:16]
            run_requests.append(
                dg.RunRequest(
                    run_key=f"discover:{label}:{digest}",
                    tags={
                        **range_tags(window[0].isoformat(), window[1].isoformat()),
                        NEW_ACCOUNTS_TAG: new_accounts_tag(found.new),
                        "ibpipeline/trigger": name,
                    },
                )
            )
        if found.changed or not (root / STATE_FILE).is_file():
            write_state_file(root, found.state)
        return dg.SensorResult(
            run_requests=run_requests,
            dynamic_partitions_requests=[accounts.build_add_request(to_add)] if to_add else [],
            cursor=found.state.to_cursor(),
        )

    return _sensor


def _is_valid(account_id: str) -> bool:
    try:
        validate_account_id(account_id)
    except InvalidAccountIdError:
        return False
    return True


# inbox -------------------------------------------------------------------------------------


def inbox_folder(data_dir: Path) -> Path:
    """``$IBPIPELINE_INBOX_DIR`` or ``<data_dir>/inbox``."""
    return (settings.inbox_dir() or Path(data_dir) / "inbox").resolve()


def inbox_run_request(path: Path) -> dg.RunRequest:
    """One ``inbox_import_job`` run for ``path``; the run key changes when the file does."""
    stat = path.stat()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return dg.RunRequest(
        run_key=f"inbox:{path.name}:{digest[:16]}:{stat.st_mtime_ns}",
        run_config=dg.RunConfig(ops={"import_inbox_file": {"config": {"path": str(path)}}}),
        tags={"ibpipeline/inbox_file": path.name[:200]},
    )


def build_inbox_sensor(
    settle_s: float = inbox.SETTLE_SECONDS,
    name: str = INBOX_SENSOR,
    minimum_interval_seconds: int = 30,
) -> dg.SensorDefinition:
    """The inbox sensor; files modified less than ``settle_s`` seconds ago wait a tick."""

    @dg.sensor(
        name=name,
        job=inbox_import_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            "One inbox_import_job run per new file in the inbox folder ($IBPIPELINE_INBOX_DIR, "
            "default `<data_dir>/inbox`)."
        ),
    )
    def _sensor(
        context: dg.SensorEvaluationContext, data_dir: DataDirResource
    ) -> dg.SensorResult | dg.SkipReason:
        folder = inbox_folder(data_dir.root())
        files = inbox.pending_files(folder, settle_s=settle_s)
        if not files:
            return dg.SkipReason(f"no new files in {folder}")
        return dg.SensorResult(run_requests=[inbox_run_request(p) for p in files])

    return _sensor


def claimed_days(instance: dg.DagsterInstance, run_id: str) -> list[date]:
    """Report days whose raw statement the run replaced (its ``raw_flex_statement``
    materializations), sorted."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION, limit=100_000
    ).records
    days = set()
    for record in records:
        event = record.event_log_entry.dagster_event
        if event.asset_key == raw_flex_statement.key and event.partition:
            days.add(date.fromisoformat(event.partition))
    return sorted(days)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name=MARTS_AFTER_INBOX_SENSOR,
    monitored_jobs=[inbox_import_job],
    request_job=marts_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "After each successful inbox_import_job run that claimed report days: one marts_job "
        "range run over those days (dbt marts, checks, tearsheets)."
    ),
)
def marts_after_inbox(context: dg.RunStatusSensorContext) -> dg.RunRequest | dg.SkipReason:
    run_id = context.dagster_run.run_id
    days = claimed_days(context.instance, run_id)
    if not days:
        return dg.SkipReason(f"inbox run {run_id} claimed no report day (duplicate or kept)")
    return dg.RunRequest(
        run_key=f"marts-after-inbox:{run_id}",
        tags={
            **range_tags(days[0].isoformat(), days[-1].isoformat()),
            "ibpipeline/after_inbox_run": run_id,
        },
    )


account_discovery_sensor = build_account_discovery_sensor()
inbox_sensor = build_inbox_sensor()
