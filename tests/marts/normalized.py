"""Write normalized tables the way the ingestion assets do, and run the dbt project on them."""

from __future__ import annotations

import os
import subprocess
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pyarrow as pa

from ibpipeline.assets.marts import landing_tables
from ibpipeline.flex.schema import DECIMAL, SCHEMAS
from ibpipeline.storage import warehouse
from ibpipeline.storage.parquet import write_day
from tests.fixture_files import PUBLIC_FLEX_DIR

REPO = Path(__file__).resolve().parents[2]
PUBLIC_FLEX = PUBLIC_FLEX_DIR
DBT = REPO / ".venv" / "bin" / "dbt"
PROJECT = REPO / "dbt_project"

# positions_daily (docs/architecture.md) is written by the positions module, not the parser.
POSITIONS_DAILY = pa.schema(
    [
        ("account_id", pa.string()),
        ("date", pa.date32()),
        ("conid", pa.int64()),
        ("level_of_detail", pa.string()),
        ("lot_open_at", pa.timestamp("us", tz="UTC")),
        ("symbol", pa.string()),
        ("description", pa.string()),
        ("asset_category", pa.string()),
        ("currency", pa.string()),
        ("multiplier", DECIMAL),
        ("quantity", DECIMAL),
        ("mark_price", DECIMAL),
        ("position_value", DECIMAL),
        ("fx_rate_to_base", DECIMAL),
        ("value_base", DECIMAL),
        ("cost_basis_money", DECIMAL),
        ("unrealized_pnl", DECIMAL),
        ("source", pa.string()),
        ("statement_sha256", pa.string()),
    ]
)


def schema_of(table: str) -> pa.Schema:
    return POSITIONS_DAILY if table == "positions_daily" else SCHEMAS[table]


def write_rows(data_dir: Path, table: str, rows: list[dict]) -> None:
    """Write ``rows`` (dicts; missing columns null) as one file per date, as the assets do."""
    schema = schema_of(table)
    groups: dict[object, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["date"]].append(row)
    for day, part in groups.items():
        cols = {f.name: [r.get(f.name) for r in part] for f in schema}
        write_day(table, day, pa.table(cols, schema=schema), data_dir=data_dir)


def dbt_build(data_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """Load every normalized table into the warehouse's landing tables, as ``dbt_marts`` does,
    then ``dbt build`` on ``data_dir`` (the DuckLake when ``IBPIPELINE_WAREHOUSE=ducklake``);
    raises with dbt's output when it fails."""
    warehouse.load_landing(data_dir, landing_tables())
    env = {**os.environ, **warehouse.dbt_env(data_dir)}
    proc = subprocess.run(
        [
            str(DBT),
            "build",
            "--project-dir",
            str(PROJECT),
            "--profiles-dir",
            str(PROJECT),
            "--target-path",
            str(data_dir / "dbt_target"),
            "--log-path",
            str(data_dir / "dbt_logs"),
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # a loaded 2-core CI machine; the corpus build reads ~30k day files
    )
    if proc.returncode != 0:
        raise AssertionError(f"dbt build failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}")
    return proc


def query(data_dir: Path, sql: str) -> pd.DataFrame:
    with warehouse.connect(data_dir, read_only=True) as con:
        return con.sql(sql).df()


def positions_from_open_positions(open_positions: pa.Table) -> pa.Table:
    """Stand-in for the positions module: OpenPositions rows as positions_daily rows
    (value_base = position_value x fx_rate_to_base, 0 for futures)."""
    rows = open_positions.to_pylist()
    for row in rows:
        fut = row["asset_category"] == "FUT"
        row["value_base"] = 0 if fut else row["position_value"] * row["fx_rate_to_base"]
        row["source"] = "OpenPositions"
    cols = {f.name: [r.get(f.name) for r in rows] for f in POSITIONS_DAILY}
    return pa.table(cols, schema=POSITIONS_DAILY)


def write_parsed(data_dir: Path, xml_path: Path) -> dict[str, pa.Table]:
    """Parse a Flex statement and write its tables in the normalized layout."""
    from ibpipeline.flex.parse import parse_statement

    tables = dict(parse_statement(xml_path).tables)
    tables["positions_daily"] = positions_from_open_positions(tables["open_positions"])
    for name in (
        "account_info",
        "nav_daily",
        "change_in_nav",
        "cash_balances",
        "positions_daily",
        "trades",
        "cash_transactions",
        "fx_rates",
    ):
        table = tables[name]
        days = table["date"].to_pylist()
        for day in sorted(set(days)):
            write_day(
                name, day, table.filter(pa.array([d == day for d in days])), data_dir=data_dir
            )
    return tables
