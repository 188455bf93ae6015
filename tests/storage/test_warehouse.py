from datetime import date

import duckdb
import pyarrow as pa
import pytest

from ibpipeline.storage import parquet, warehouse


def table(account_id: str, day: date, n: int) -> pa.Table:
    return pa.table(
        {
            "account_id": [account_id] * n,
            "date": pa.array([day] * n, pa.date32()),
            "x": list(range(n)),
        }
    )


def test_refresh_views_over_parquet(tmp_path):
    d1, d2 = date(2024, 1, 2), date(2024, 1, 3)
    parquet.write_day("nav_daily", d1, table("U1111111", d1, 2), data_dir=tmp_path)
    parquet.write_day("nav_daily", d2, table("U2222222", d2, 3), data_dir=tmp_path)
    parquet.write_day("trades", d1, table("U1111111", d1, 0), data_dir=tmp_path)
    # gateway tables use the per-account layout; the views read both
    parquet.write_partition(
        "gateway_pnl", "U2222222", d2, table("U2222222", d2, 4), data_dir=tmp_path
    )
    assert warehouse.refresh_views(tmp_path) == {"gateway_pnl": 4, "nav_daily": 5, "trades": 0}
    with duckdb.connect(str(tmp_path / "ibpipeline.duckdb"), read_only=True) as con:
        got = con.execute(
            "SELECT account_id, date, count(*) FROM normalized.nav_daily GROUP BY ALL ORDER BY 1"
        ).fetchall()
    assert got == [("U1111111", d1, 2), ("U2222222", d2, 3)]
    # New partitions show up without redefining; removed tables lose their view.
    parquet.write_day(
        "nav_daily",
        d2,
        pa.concat_tables([table("U2222222", d2, 3), table("U1111111", d2, 1)]),
        data_dir=tmp_path,
    )
    for f in (tmp_path / "normalized" / "trades").rglob("*.parquet"):
        f.unlink()
    assert warehouse.refresh_views(tmp_path) == {"gateway_pnl": 4, "nav_daily": 6}
    with duckdb.connect(str(tmp_path / "ibpipeline.duckdb"), read_only=True) as con:
        views = con.execute(
            "SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal"
        ).fetchall()
    assert sorted(views) == [
        ("main", "gateway_pnl"),
        ("main", "nav_daily"),
        ("normalized", "gateway_pnl"),
        ("normalized", "nav_daily"),
    ]


def test_every_table_is_queryable_by_its_name(tmp_path):
    """Each view has an alias of the same name in ``main`` (where the dbt marts are)."""
    d = date(2024, 1, 2)
    parquet.write_day("nav_daily", d, table("U1111111", d, 2), data_dir=tmp_path)
    parquet.write_partition("gateway_positions", "U1", d, table("U1", d, 3), data_dir=tmp_path)
    warehouse.refresh_views(tmp_path)
    with duckdb.connect(str(tmp_path / "ibpipeline.duckdb"), read_only=True) as con:
        assert con.execute("select count(*) from gateway_positions").fetchone() == (3,)
        assert con.execute("select count(*) from normalized.gateway_positions").fetchone() == (3,)
        assert con.execute("select count(*) from nav_daily").fetchone() == (2,)


def test_an_alias_never_replaces_an_object_it_did_not_create(tmp_path):
    d = date(2024, 1, 2)
    parquet.write_day("trades", d, table("U1111111", d, 2), data_dir=tmp_path)
    parquet.write_day("fx_rates", d, table("U1111111", d, 1), data_dir=tmp_path)
    with duckdb.connect(str(warehouse.warehouse_path(tmp_path))) as con:
        con.execute("create table main.trades as select 42 as mine")  # e.g. a dbt model
        con.execute("create view main.fx_rates as select 7 as mine")
    assert warehouse.refresh_views(tmp_path) == {"fx_rates": 1, "trades": 2}
    for f in (tmp_path / "normalized").rglob("*.parquet"):
        f.unlink()
    assert warehouse.refresh_views(tmp_path) == {}
    with duckdb.connect(str(warehouse.warehouse_path(tmp_path)), read_only=True) as con:
        assert con.execute("select * from main.trades").fetchall() == [(42,)]
        assert con.execute("select * from main.fx_rates").fetchall() == [(7,)]


def test_refresh_of_some_tables_leaves_the_others(tmp_path):
    """The gateway views asset refreshes only the gateway tables' views."""
    d = date(2024, 1, 2)
    parquet.write_day("nav_daily", d, table("U1111111", d, 2), data_dir=tmp_path)
    warehouse.refresh_views(tmp_path)
    for f in (tmp_path / "normalized").rglob("*.parquet"):
        f.unlink()  # nav_daily's view is stale, but not in the scope below
    parquet.write_partition("gateway_pnl", "U1", d, table("U1", d, 4), data_dir=tmp_path)
    gateway = ("gateway_account_values", "gateway_positions", "gateway_pnl")
    assert warehouse.refresh_views(tmp_path, tables=gateway) == {"gateway_pnl": 4}
    with duckdb.connect(str(warehouse.warehouse_path(tmp_path)), read_only=True) as con:
        views = con.execute(
            "SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal"
        ).fetchall()
    assert sorted(views) == [
        ("main", "gateway_pnl"),
        ("main", "nav_daily"),
        ("normalized", "gateway_pnl"),
        ("normalized", "nav_daily"),
    ]


def landing_rows(data_dir) -> list[tuple]:
    with duckdb.connect(str(data_dir / "ibpipeline.duckdb"), read_only=True) as con:
        return con.execute(
            "SELECT account_id, date, count(*) FROM landing.nav_daily GROUP BY ALL ORDER BY 2, 1"
        ).fetchall()


@pytest.fixture(params=["one statement", "a file per statement"])
def load_batches(request, monkeypatch):
    """``load_landing`` reading all files in one statement, and in batches of one file (as a long
    history does in batches of ``LOAD_BATCH_FILES``)."""
    if request.param == "a file per statement":
        monkeypatch.setattr(warehouse, "LOAD_BATCH_FILES", 1)


def test_load_landing_replaces_exactly_the_window(tmp_path, load_batches):
    d1, d2, d3 = date(2024, 1, 2), date(2024, 1, 3), date(2024, 1, 4)
    for day, n in ((d1, 2), (d2, 3), (d3, 1)):
        parquet.write_day("nav_daily", day, table("U1111111", day, n), data_dir=tmp_path)
    # the first load reads every file whatever the window (the table does not exist yet)
    assert warehouse.load_landing(tmp_path, ["nav_daily"], (d2, d3)) == {"nav_daily": 3}
    assert landing_rows(tmp_path) == [("U1111111", d1, 2), ("U1111111", d2, 3), ("U1111111", d3, 1)]

    # d2 rewritten with another account, d1 rewritten too but outside the window: only d2 moves
    parquet.write_day("nav_daily", d2, table("U2222222", d2, 4), data_dir=tmp_path)
    parquet.write_day("nav_daily", d1, table("U2222222", d1, 7), data_dir=tmp_path)
    assert warehouse.load_landing(tmp_path, ["nav_daily"], (d2, d3)) == {"nav_daily": 4}
    assert landing_rows(tmp_path) == [("U1111111", d1, 2), ("U2222222", d2, 4), ("U1111111", d3, 1)]

    # a day whose file is gone loses its rows; a re-run of the same window changes nothing
    parquet.day_path(tmp_path, "nav_daily", d3).unlink()
    for _ in range(2):
        assert warehouse.load_landing(tmp_path, ["nav_daily"], (d3, date(2024, 1, 5))) == {
            "nav_daily": 0
        }
        assert landing_rows(tmp_path) == [("U1111111", d1, 2), ("U2222222", d2, 4)]

    # no window: everything from the files again
    assert warehouse.load_landing(tmp_path, ["nav_daily"]) == {"nav_daily": 11}
    assert landing_rows(tmp_path) == [("U2222222", d1, 7), ("U2222222", d2, 4)]


def test_load_landing_reloads_whole_when_files_gain_a_column(tmp_path, load_batches):
    d1, d2 = date(2024, 1, 2), date(2024, 1, 3)
    parquet.write_day("nav_daily", d1, table("U1111111", d1, 2), data_dir=tmp_path)
    warehouse.load_landing(tmp_path, ["nav_daily"])
    newer = table("U1111111", d2, 1).append_column("y", pa.array(["new"]))
    parquet.write_day("nav_daily", d2, newer, data_dir=tmp_path)
    assert warehouse.load_landing(tmp_path, ["nav_daily"], (d2, date(2024, 1, 4))) == {
        "nav_daily": 1
    }
    with duckdb.connect(str(tmp_path / "ibpipeline.duckdb"), read_only=True) as con:
        got = con.execute("SELECT date, y FROM landing.nav_daily ORDER BY date, x").fetchall()
    assert got == [(d1, None), (d1, None), (d2, "new")]
    # a whole load whose newer files come last: the column is added, the older rows get null
    with duckdb.connect(str(tmp_path / "ibpipeline.duckdb")) as con:
        con.execute("DROP TABLE landing.nav_daily")
    assert warehouse.load_landing(tmp_path, ["nav_daily"]) == {"nav_daily": 3}
    with duckdb.connect(str(tmp_path / "ibpipeline.duckdb"), read_only=True) as con:
        assert con.execute("SELECT date, x, y FROM landing.nav_daily").fetchall() == [
            (d1, 0, None),
            (d1, 1, None),
            (d2, 0, "new"),
        ]


def test_load_landing_of_a_table_without_files_leaves_no_table(tmp_path):
    assert warehouse.load_landing(tmp_path, ["trades"]) == {"trades": 0}
    with duckdb.connect(str(tmp_path / "ibpipeline.duckdb"), read_only=True) as con:
        assert con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'trades'"
        ).fetchone() == (0,)


def test_writers_are_capped_at_the_configured_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("IBPIPELINE_DUCKDB_MEMORY_LIMIT", "300MB")
    with warehouse.connect(tmp_path) as con:
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert limit == "286.1 MiB"  # 300 MB, printed in binary units
    monkeypatch.setenv("IBPIPELINE_DUCKDB_MEMORY_LIMIT", "lots")
    with pytest.raises(ValueError, match="IBPIPELINE_DUCKDB_MEMORY_LIMIT='lots'"):
        warehouse.connect(tmp_path)
