"""``docs/tables.md``: every normalized table's columns, types, units and Flex attributes,
rendered from the Arrow schemas themselves (``ibpipeline tables`` prints it; a test keeps the
committed file equal to it)."""

from __future__ import annotations

import pyarrow as pa

from ibpipeline.flex.schema import POSITIONS_DAILY, SCHEMAS
from ibpipeline.gateway.schema import TABLE_SCHEMAS as GATEWAY_SCHEMAS

HEADER = """# Normalized tables

Generated from the Arrow schemas by `ibpipeline tables > docs/tables.md`; do not edit by hand.
Flex tables live in `data/normalized/<table>/date=<YYYY-MM-DD>/part-0.parquet` (every account of
the day in one file), gateway tables in
`data/normalized/<table>/account_id=<id>/date=<YYYY-MM-DD>/part-0.parquet`; DuckDB views of the same names are in schema `normalized` of `data/ibpipeline.duckdb`.
`decimal128(38, 10)` values are exact. `date` is the account's report date; timestamps are UTC.
Money is in the row's `currency` unless the unit says otherwise; `*_base` columns are in the
account's base currency. The Dagster assets write account_info, nav_daily, change_in_nav,
cash_balances, positions_daily, trades, cash_transactions, fx_rates and the gateway_* tables;
`ibpipeline parse` also writes the parser's raw tables (open_positions, prior_period_positions,
corporate_actions, transfers). The dbt models' columns are documented in
`dbt_project/models/*/schema.yml`; a staging column read from a table here repeats its description.
"""


def _text(field: pa.Field, key: bytes) -> str:
    value = (field.metadata or {}).get(key, b"")
    return value.decode().replace("|", "\\|")


def table_markdown(name: str, schema: pa.Schema) -> str:
    """One table's section: a row per column with type, unit, Flex attribute and description."""
    lines = [
        f"## {name}",
        "",
        "| column | type | unit | Flex attribute | description |",
        "|---|---|---|---|---|",
    ]
    for field in schema:
        flex = _text(field, b"flex")
        lines.append(
            f"| {field.name} | {field.type} | {_text(field, b'unit')} | "
            f"{f'`{flex}`' if flex else ''} | {_text(field, b'doc')} |"
        )
    return "\n".join(lines)


def render_tables_markdown() -> str:
    """The whole ``docs/tables.md``."""
    tables = {**SCHEMAS, "positions_daily": POSITIONS_DAILY, **GATEWAY_SCHEMAS}
    return "\n\n".join([HEADER.rstrip(), *(table_markdown(n, s) for n, s in tables.items())]) + "\n"
