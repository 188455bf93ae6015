"""Every column of every dbt model (staging, intermediate and marts: all are Dagster assets) is
documented in the models' schema .yml with a description and its type, the documentation matches
what the models really output, staging columns say what docs/tables.md says of the normalized
column they pass through, and the Dagster asset specs carry it all (the UI's column table)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from ibpipeline.assets.normalized import column_description
from ibpipeline.dbt import dbt_project
from ibpipeline.definitions import defs
from ibpipeline.flex.schema import POSITIONS_DAILY, SCHEMAS
from ibpipeline.storage import warehouse

from .normalized import dbt_build


def models() -> dict[str, dict[str, Any]]:
    """The dbt models of the manifest (``dbt parse``, run by tests/conftest.py), by name."""
    manifest = json.loads(dbt_project.manifest_path.read_text())
    return {
        node["name"]: node
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model"
    }


@pytest.fixture(scope="module")
def empty_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every model built on empty landing tables: the same columns and types as with data (the
    staging models cast every column they read), in a fraction of a data build's time."""
    data_dir = tmp_path_factory.mktemp("docs")
    dbt_build(data_dir, "--resource-type", "model")
    return data_dir


@pytest.mark.slow
def test_every_output_column_is_documented_with_its_type(empty_build: Path) -> None:
    problems = []
    with warehouse.connect(empty_build, read_only=True) as con:
        for name, node in sorted(models().items()):
            actual = {row[0]: row[1] for row in con.execute(f'DESCRIBE "{name}"').fetchall()}
            documented = node["columns"]
            problems += [f"{name}.{c}: not documented" for c in actual if c not in documented]
            problems += [
                f"{name}.{c}: documented, not output" for c in documented if c not in actual
            ]
            for column, doc in documented.items():
                if not (doc.get("description") or "").strip():
                    problems.append(f"{name}.{column}: empty description")
                if (
                    column in actual
                    and (doc.get("data_type") or "").lower() != actual[column].lower()
                ):
                    problems.append(
                        f"{name}.{column}: data_type {doc.get('data_type')!r}, is {actual[column]!r}"
                    )
    assert not problems, "\n".join(problems)


def test_staging_columns_say_what_docs_tables_says() -> None:
    """A staging column read from a normalized table carries that column's description, unit and
    Flex attribute (docs/tables.md, the normalized assets' column schema) word for word."""
    problems = []
    for name, node in sorted(models().items()):
        if not node["original_file_path"].startswith("models/staging/"):
            continue
        (source,) = {
            s.split(".")[-1] for s in node["depends_on"]["nodes"] if s.startswith("source.")
        }
        schema = POSITIONS_DAILY if source == "positions_daily" else SCHEMAS[source]
        for column, doc in node["columns"].items():
            if column not in schema.names:
                continue
            registry = column_description(schema.field(column))
            if registry and registry not in doc.get("description", ""):
                problems.append(f"{name}.{column}: {doc.get('description')!r} lacks {registry!r}")
    assert not problems, "\n".join(problems)


def test_dbt_asset_specs_carry_the_column_descriptions_and_types() -> None:
    for name, node in sorted(models().items()):
        key = dg.AssetKey(name)
        spec = defs.resolve_assets_def(key).specs_by_key[key]
        schema = spec.metadata.get("dagster/column_schema")
        assert isinstance(schema, dg.TableSchema), f"{name}: no column schema"
        shown = {c.name: (c.type, c.description) for c in schema.columns}
        expected = {c: (d["data_type"], d["description"]) for c, d in node["columns"].items()}
        assert shown == expected, name
        assert all(description for _, description in shown.values()), name
