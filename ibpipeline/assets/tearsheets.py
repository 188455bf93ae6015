"""``tearsheets``: the Dagster asset drawing one PNG per account (and ``ALL``) from the marts.

The drawing, the digests that skip unchanged sheets and the process pool are plain functions in
``ibpipeline.reports.tearsheets``. The asset's Markdown metadata embeds ``ALL`` and the first
``EMBEDDED_SHEETS`` accounts as base64 data URIs, on the newest partition of the run only (a range
run records one materialization per day, and the images would otherwise be stored once per day).
The per-account entries (``accounts``, ``path_<id>``, ``xirr_<id>``, ``twr_<id>``) ride on that
partition too: a year of 1,000 accounts would otherwise repeat 3,000 entries 365 times (a 228 MB
Celery task result, over RabbitMQ's 128 MB message limit). The other days carry the counts.
"""

from typing import Any

import dagster as dg

from ibpipeline.assets.checks import open_marts
from ibpipeline.assets.marts import MARTS_GROUP, WRITER_POOL
from ibpipeline.partitions import daily
from ibpipeline.reports.tearsheets import (
    TEARSHEET_DIR,
    draw_changed,
    markdown_section,
    money_weighted_return,
    read_series,
    tearsheet_path,
)
from ibpipeline.resources import DataDirResource

EMBEDDED_SHEETS = 24
"""Accounts (besides ALL) whose PNG the metadata embeds; every path is listed regardless."""


@dg.asset(
    deps=["daily_nav", "daily_returns", "drawdowns"],
    # daily + single run like the marts it reads, so a UI backfill of a range stays one run
    # (marts.py); every run renders the whole history whatever its days.
    partitions_def=daily,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name=MARTS_GROUP,
    pool=WRITER_POOL,
    kinds={"python", "png"},
    description="Equity curve + drawdown PNG per account and ALL in `<data_dir>/tearsheets/`.",
)
def tearsheets(
    context: dg.AssetExecutionContext, data_dir: DataDirResource
) -> dg.MaterializeResult:
    """Render and write every account's tearsheet; embed them in the metadata."""
    root = data_dir.root()
    with open_marts(root) as con:
        all_series = read_series(con)
    if not all_series:  # e.g. imported statements without EquitySummary: nothing to draw
        context.log.info("daily_nav has no NAV rows yet: no tearsheet to draw")
        return dg.MaterializeResult(metadata={"account_count": 0, "drawn": 0})
    weighted = {s.account_id: money_weighted_return(s) for s in all_series}
    pngs, drawn = draw_changed(root, all_series, weighted)
    context.log.info(
        f"drew {len(drawn)} of {len(all_series)} tearsheets in {root / TEARSHEET_DIR} "
        "(the others' data did not change)"
    )
    metadata: dict[str, Any] = {"account_count": len(all_series), "drawn": len(drawn)}
    per_account: dict[str, Any] = {"accounts": [s.account_id for s in all_series]}
    sections = []
    ids = [s.account_id for s in all_series]
    embedded = {"ALL"} & set(ids) | set([i for i in ids if i != "ALL"][:EMBEDDED_SHEETS])
    for series in all_series:
        money_weighted = weighted[series.account_id]
        path = tearsheet_path(root, series.account_id)
        if series.account_id in embedded:
            sections.append(markdown_section(series, money_weighted, path, pngs[series.account_id]))
        per_account[f"path_{series.account_id}"] = dg.MetadataValue.path(str(path))
        per_account[f"xirr_{series.account_id}"] = money_weighted
        per_account[f"twr_{series.account_id}"] = series.twr
    if len(embedded) < len(all_series):
        sections.append(
            f"{len(all_series) - len(embedded)} more sheets in `{root / TEARSHEET_DIR}`"
        )
    # images and per-account entries go on the run's newest day only: a range run has one
    # materialization per day
    per_account["tearsheets"] = dg.MetadataValue.md("\n".join(sections))
    newest = (
        context.partition_keys[-1]
        if context.has_partition_key_range or context.has_partition_key
        else None
    )
    if newest is None:
        metadata.update(per_account)
    else:
        context.add_asset_metadata(per_account, partition_key=newest)
    return dg.MaterializeResult(metadata=metadata)
