from datetime import date

import duckdb
import pyarrow as pa

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
        views = con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    assert sorted(views) == [("gateway_pnl",), ("nav_daily",)]
