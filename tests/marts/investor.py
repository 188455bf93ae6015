"""Helpers for the investor marts' tests: write every parsed table, read XML attributes."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pyarrow as pa
from lxml import etree

from ibpipeline.storage.parquet import write_day

from .normalized import positions_from_open_positions


def write_all_parsed(data_dir: Path, xml_path: Path | bytes) -> dict[str, pa.Table]:
    """Parse a Flex statement and write every table it has (new ones too) in the normalized
    layout; positions_daily from OpenPositions (as ``write_parsed``)."""
    from ibpipeline.flex.parse import parse_statement

    tables = dict(parse_statement(xml_path).tables)
    tables["positions_daily"] = positions_from_open_positions(tables["open_positions"])
    for name, table in tables.items():
        if name in ("open_positions", "prior_period_positions") or table.num_rows == 0:
            continue
        days = table["date"].to_pylist()
        for day in sorted(set(days)):
            write_day(
                name, day, table.filter(pa.array([d == day for d in days])), data_dir=data_dir
            )
    return tables


def xml_rows(xml: Path | bytes, tag: str) -> list[dict[str, str]]:
    """Attributes of every ``tag`` element of a Flex file, read with lxml."""
    root = etree.fromstring(xml.read_bytes() if isinstance(xml, Path) else xml)
    return [dict(e.attrib) for e in root.iter(tag)]


def dec(value: str | None) -> Decimal:
    return Decimal(value) if value not in (None, "") else Decimal(0)
