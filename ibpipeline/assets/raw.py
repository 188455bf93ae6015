"""``raw_flex_statement``: fetch Activity Flex statements into the content-addressed raw store.

Partitioned by report date only (one Flex request covers every account of a query), with a
single-run backfill policy. A graph-backed asset: one ``fetch_<query>`` step per configured Flex
query (``settings.flex_queries()``), each with its own resource, token, rate limiter and Dagster
pool, then one ``record_statements`` step that materializes the asset. A run over D contiguous
days sends ceil(D / 365) statement requests per query. A failing query fails its own step (and so
the asset's run); the other queries' statements and manifests are stored all the same.
"""

from collections.abc import Sequence
from datetime import date, timedelta

import dagster as dg

from ibpipeline import settings
from ibpipeline.flex.client import split_range
from ibpipeline.flex.ingest import (
    QueryFetch,
    StoredWindow,
    days_in,
    statement_accounts,
    store_window,
)
from ibpipeline.flex.queries import DEFAULT_QUERY_NAME, FlexQuery, overlapping_accounts
from ibpipeline.memory import release_memory
from ibpipeline.partitions import daily, register_accounts
from ibpipeline.resources import FlexResource

__all__ = [
    "build_raw_flex_statement",
    "days_in",
    "raw_flex_statement",
    "statement_accounts",
]

DESCRIPTION = (
    "Activity Flex statements (every account of every configured query) stored by SHA-256 under "
    "raw/flex/statements, with a per-report-date manifest under raw/flex/by_date."
)


def _fetch_op(query: FlexQuery, several: bool) -> dg.OpDefinition:
    """The step fetching and storing ``query``'s statements for the run's dates."""

    @dg.op(
        name=query.op_name,
        required_resource_keys={query.resource_key, "data_dir"},
        pool=query.pool(settings.FLEX_TOKEN_ENV),
        description=f"Fetch and store the statements of Flex {query.describe()}.",
    )
    def fetch(context: dg.OpExecutionContext) -> QueryFetch:
        flex: FlexResource = getattr(context.resources, query.resource_key)
        root = context.resources.data_dir.root()
        window = context.partition_time_window
        last_day = window.end.date() - timedelta(days=1)  # the window end is exclusive
        stored: list[StoredWindow] = []
        with flex.client(logger=context.log) as client:
            for fd, td in split_range(window.start.date(), last_day):
                result = client.fetch(flex.query_id, fd, td, query_name=flex.query_name)
                found = statement_accounts(result.content)
                new_accounts = register_accounts(context.instance, found)
                item = store_window(
                    root,
                    result,
                    fd,
                    td,
                    found,
                    query=query.name if several else None,
                    query_label=query.name,
                )
                context.log.info(
                    f"{query.describe()} window {fd}..{td}: statement {item.sha256[:12]} "
                    f"({item.size} bytes, {'new' if item.written else 'already stored'}), "
                    f"accounts {list(found)}, new accounts {new_accounts}"
                )
                stored.append(item)
                del result  # the statement's bytes (hundreds of MB for a year of many accounts)
        release_memory()
        return QueryFetch(query.name, flex.query_id, tuple(stored))

    return fetch


@dg.op(name="record_statements", out=dg.Out(dg.Nothing))
def record_statements(context: dg.AssetExecutionContext, fetched: list[QueryFetch]) -> None:
    """Materialize ``raw_flex_statement``: each report date's statements, the run's totals, and a
    warning for accounts that several queries deliver."""
    windows = [w for f in fetched for w in f.windows]
    overlap = overlapping_accounts({f.query: f.accounts for f in fetched})
    if overlap:
        listed = "; ".join(f"{a}: {', '.join(q)}" for a, q in list(overlap.items())[:20])
        context.log.warning(
            f"{len(overlap)} account(s) are delivered by several Flex queries ({listed}); each is "
            "supplied by the query whose name sorts first. Remove them from the other queries."
        )
    by_day: dict[date, list[StoredWindow]] = {}
    for w in windows:
        for day in days_in(w.from_date, w.to_date):
            by_day.setdefault(day, []).append(w)
    for day, items in sorted(by_day.items()):  # each day's own statements, over the run's totals
        metadata: dict[str, object] = {
            "sha256": ", ".join(w.sha256 for w in items),
            "window": ", ".join(dict.fromkeys(f"{w.from_date}..{w.to_date}" for w in items)),
            "accounts": sorted({a for w in items for a in w.accounts}),
        }
        if len(fetched) > 1:
            metadata["queries"] = [w.query for w in items]
        context.add_asset_metadata(metadata, partition_key=day.isoformat())
    metadata = {
        "sha256": ", ".join(w.sha256 for w in windows),
        "size_bytes": sum(w.size for w in windows),
        "windows": list(dict.fromkeys(f"{w.from_date}..{w.to_date}" for w in windows)),
        "accounts": sorted({a for w in windows for a in w.accounts}),
        "http_requests": sum(w.requests for w in windows),
        "statements_written": sum(w.written for w in windows),
        "manifests_changed": sum(w.manifests_changed for w in windows),
    }
    if len(fetched) > 1:
        metadata["queries"] = dg.MetadataValue.json(
            {f.query: {"query_id": f.query_id, "accounts": len(f.accounts)} for f in fetched}
        )
        metadata["overlapping_accounts"] = sorted(overlap)
    context.add_output_metadata(metadata)


def build_raw_flex_statement(queries: Sequence[FlexQuery]) -> dg.AssetsDefinition:
    """``raw_flex_statement`` with one fetch step per query (resource ``query.resource_key``)."""
    if not queries:
        raise ValueError("at least one Flex query is needed")
    fetch_ops = [_fetch_op(q, several=len(queries) > 1) for q in queries]

    @dg.graph_asset(
        name="raw_flex_statement",
        partitions_def=daily,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name="raw",
        kinds={"xml"},
        description=DESCRIPTION,
    )
    def raw_flex_statement():
        return record_statements([fetch() for fetch in fetch_ops])

    return raw_flex_statement


DEFAULT_QUERIES = (FlexQuery(DEFAULT_QUERY_NAME, "", settings.FLEX_TOKEN_ENV),)
raw_flex_statement = build_raw_flex_statement(DEFAULT_QUERIES)
"""The single-query asset (resource ``flex``); ``build_defs`` builds it from the environment."""
