"""Dagster assets by layer: raw (sources), normalized (Parquet), warehouse (DuckDB)."""

from ibpipeline.assets.normalized import NORMALIZED_TABLES, normalized_flex
from ibpipeline.assets.raw import raw_flex_statement
from ibpipeline.assets.warehouse import warehouse_views

flex_assets = [raw_flex_statement, normalized_flex, warehouse_views]

__all__ = [
    "NORMALIZED_TABLES",
    "flex_assets",
    "normalized_flex",
    "raw_flex_statement",
    "warehouse_views",
]
