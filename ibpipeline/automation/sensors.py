"""Sensors: account discovery, raw -> normalized chaining, and the Flex inbox.

- ``account_discovery_sensor`` asks each account source which accounts exist (the accounts of the
  newest stored Flex statement and the managed accounts of every configured IB Gateway), registers
  new valid ids in the ``account`` dynamic partitions and requests ONE ``flex_raw_job`` range run
  re-fetching the history (statements fetched before an account joined the query lack it). Invalid
  ids are rejected with a logged reason; accounts that disappear from every source or report a
  ``dateClosed`` are marked closed (never removed), but not while a gateway is unreachable. State:
  the sensor cursor, mirrored to ``<data_dir>/state/accounts.json``.
- ``flex_normalize_after_raw`` reacts to every successful raw run that is not part of an asset
  backfill that already selects the normalized assets: ONE ``flex_normalize_job`` range run over
  the raw run's dates for every contiguous block of the accounts the run names (tag
  ``ibpipeline/normalize_accounts``; default all). Raw always completes before normalization.
- ``inbox_sensor`` requests one ``inbox_import_job`` run per settled file in the inbox folder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

import dagster as dg
import pyarrow.parquet as pq

from ibpipeline import inbox, settings
from ibpipeline.assets import NORMALIZED_TABLES, raw_flex_statement
from ibpipeline.automation.jobs import flex_normalize_job, flex_raw_job, inbox_import_job
from ibpipeline.automation.ranges import (
    BACKFILL_TAG,
    NORMALIZE_ACCOUNTS_TAG,
    normalize_accounts_from_tag,
    normalize_accounts_tag,
    normalize_run_requests,
    range_tags,
    ready_report_day,
    run_date_range,
)
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
NORMALIZE_AFTER_RAW_SENSOR = "flex_normalize_after_raw"
INBOX_SENSOR = "inbox_sensor"
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


def latest_flex_manifest(data_dir: Path) -> tuple[date, rawstore.Manifest] | None:
    """The newest report date whose manifest comes from a Flex fetch, and that manifest."""
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
        if manifest is not None and manifest.source == "flex":
            return day, manifest
    return None


def closed_dates(data_dir: Path, account_ids: Sequence[str], day: date) -> dict[str, date]:
    """``dateClosed`` of each account in its normalized ``account_info`` row of ``day`` (accounts
    without that partition or without a close date are left out)."""
    out = {}
    for account_id in account_ids:
        path = parquet.partition_path(data_dir, "account_info", account_id, day)
        if not path.is_file():
            continue
        values = pq.read_table(path, columns=["date_closed"]).column("date_closed").to_pylist()
        closed = [v for v in values if v is not None]
        if closed:
            out[account_id] = max(closed)
    return out


def has_normalized_history(data_dir: Path, start: date) -> Callable[[str], bool]:
    """Predicate: the account's ``nav_daily`` partition of ``start`` exists (its history was
    normalized already, e.g. by a backfill before discovery was turned on)."""

    def check(account_id: str) -> bool:
        return parquet.partition_path(data_dir, "nav_daily", account_id, start).is_file()

    return check


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
        job=flex_raw_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            "Registers accounts found in the newest Flex statement or on a configured IB "
            "Gateway, re-fetches the raw history for new ones (one range run; "
            "flex_normalize_after_raw then normalizes them), marks closed accounts (not while "
            "a gateway is unreachable)."
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
        unanswered = []
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
            context.log.info(f"new accounts {list(found.new)}: re-fetching raw {label}")
            digest = hashlib.sha256(" ".join(found.new).encode()).hexdigest()[:16]
            run_requests.append(
                dg.RunRequest(
                    run_key=f"discover:{label}:{digest}",
                    tags={
                        **range_tags(window[0].isoformat(), window[1].isoformat()),
                        NORMALIZE_ACCOUNTS_TAG: normalize_accounts_tag(found.new),
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


# raw -> normalized chaining ----------------------------------------------------------------


def is_raw_run(run: dg.DagsterRun) -> bool:
    """Whether the run materialized ``raw_flex_statement``."""
    if run.job_name == flex_raw_job.name:
        return True
    return raw_flex_statement.key in (run.asset_selection or set())


def backfill_selects_normalized(instance: dg.DagsterInstance, backfill_id: str) -> bool:
    """Whether the asset backfill ``backfill_id`` itself materializes normalized tables."""
    backfill = instance.get_backfill(backfill_id)
    if backfill is None or backfill.asset_selection is None:
        return False
    names = {key.to_user_string() for key in backfill.asset_selection}
    return bool(names & set(NORMALIZED_TABLES))


def normalize_requests_after(run: dg.DagsterRun, registered: Sequence[str]) -> list[dg.RunRequest]:
    """The normalized range runs that follow a successful raw run (empty when none are due)."""
    span = run_date_range(run.tags)
    if span is None:
        return []
    wanted = normalize_accounts_from_tag(run.tags.get(NORMALIZE_ACCOUNTS_TAG), registered)
    return normalize_run_requests(
        registered,
        wanted,
        *span,
        job_name=flex_normalize_job.name,
        run_key_prefix=f"after-raw:{run.run_id}",
        tags={"ibpipeline/after_raw_run": run.run_id},
    )


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name=NORMALIZE_AFTER_RAW_SENSOR,
    request_job=flex_normalize_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "After each successful raw Flex run: one flex_normalize_job range run over its dates "
        "for the accounts it names (default all), so each statement is parsed once."
    ),
)
def flex_normalize_after_raw(
    context: dg.RunStatusSensorContext,
) -> list[dg.RunRequest] | dg.SkipReason:
    run = context.dagster_run
    if not is_raw_run(run):
        return dg.SkipReason(f"run {run.run_id} did not materialize raw_flex_statement")
    backfill_id = run.tags.get(BACKFILL_TAG)
    if backfill_id and backfill_selects_normalized(context.instance, backfill_id):
        return dg.SkipReason(f"backfill {backfill_id} normalizes its own partitions")
    registered = context.instance.get_dynamic_partitions(ACCOUNT_DIMENSION)
    requests = normalize_requests_after(run, registered)
    if not requests:
        return dg.SkipReason(f"raw run {run.run_id}: no accounts or dates to normalize")
    return requests


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
            "default <data_dir>/inbox)."
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


account_discovery_sensor = build_account_discovery_sensor()
inbox_sensor = build_inbox_sensor()
