"""``raw_flex_statement``: fetch Activity Flex statements into the content-addressed raw store.

Partitioned by report date only (one Flex request covers every account of the query), with a
single-run backfill policy: a run over D contiguous days sends ceil(D / 365) statement requests.
"""

from collections.abc import Iterator
from datetime import date, timedelta

import dagster as dg
from lxml import etree

from ibpipeline.flex.client import split_range
from ibpipeline.flex.schema import NULL_TOKENS
from ibpipeline.partitions import daily, register_accounts, validate_account_id
from ibpipeline.resources import DataDirResource, FlexResource
from ibpipeline.storage import rawstore


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

    Streams the document (no tree). Raises InvalidAccountIdError on an unsafe id
    (:func:`ibpipeline.partitions.validate_account_id`).
    """
    parser = etree.XMLParser(
        target=_AccountIds(), huge_tree=True, resolve_entities=False, no_network=True
    )
    parser.feed(content)
    return tuple(sorted(validate_account_id(a) for a in parser.close()))


@dg.asset(
    partitions_def=daily,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="flex_api",
    group_name="raw",
    kinds={"xml"},
    description=(
        "Activity Flex statements (every account of the query) stored by SHA-256 under "
        "raw/flex/statements, with a per-report-date manifest under raw/flex/by_date."
    ),
)
def raw_flex_statement(
    context: dg.AssetExecutionContext, flex: FlexResource, data_dir: DataDirResource
) -> dg.MaterializeResult:
    """Request one statement per <= 365-day window of the run's dates; store and index it."""
    window = context.partition_time_window
    root = data_dir.root()
    shas, accounts, windows = [], set(), []
    total_size = written = requests = manifests_changed = 0
    with flex.client(logger=context.log) as client:
        last_day = window.end.date() - timedelta(days=1)  # the window end is exclusive
        for fd, td in split_range(window.start.date(), last_day):
            result = client.fetch(flex.query_id, fd, td)
            requests += result.requests
            found = statement_accounts(result.content)
            stored = rawstore.put_statement(root, result.content)
            new_accounts = register_accounts(context.instance, found)
            manifest = rawstore.Manifest(
                sha256=stored.sha256,
                size=stored.size,
                from_date=fd,
                to_date=td,
                accounts=found,
                fetched_at=result.fetched_at.isoformat(timespec="seconds"),
                source="flex",
            )
            manifests_changed += rawstore.write_manifests(root, days_in(fd, td), manifest)
            context.log.info(
                f"window {fd}..{td}: statement {stored.sha256[:12]} ({stored.size} bytes, "
                f"{'new' if stored.written else 'already stored'}), accounts {list(found)}, "
                f"new accounts {new_accounts}"
            )
            for day in days_in(fd, td):  # each day's own statement, over the run's totals
                context.add_asset_metadata(
                    {"sha256": stored.sha256, "window": f"{fd}..{td}", "accounts": list(found)},
                    partition_key=day.isoformat(),
                )
            shas.append(stored.sha256)
            accounts.update(found)
            windows.append(f"{fd}..{td}")
            total_size += stored.size
            written += stored.written
    return dg.MaterializeResult(
        metadata={
            "sha256": ", ".join(shas),
            "size_bytes": total_size,
            "windows": windows,
            "accounts": sorted(accounts),
            "http_requests": requests,
            "statements_written": written,
            "manifests_changed": manifests_changed,
        }
    )
