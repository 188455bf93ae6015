from datetime import date
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ibpipeline import storage
from ibpipeline.partitions import InvalidAccountIdError
from ibpipeline.storage import parquet

SCHEMA = pa.schema(
    [
        ("account_id", pa.string()),
        ("date", pa.date32()),
        ("symbol", pa.string()),
        ("value_base", pa.decimal128(38, 10)),
    ]
)
D1 = date(2024, 3, 4)
D2 = date(2024, 3, 5)


def rows(account_id: str, day: date, values: list[str]) -> pa.Table:
    return pa.table(
        {
            "account_id": [account_id] * len(values),
            "date": [day] * len(values),
            "symbol": [f"S{i}" for i in range(len(values))],
            "value_base": [Decimal(v) for v in values],
        },
        schema=SCHEMA,
    )


def test_hive_layout_and_round_trip(tmp_path):
    path = parquet.write_partition(
        "nav_daily", "U1234567", D1, rows("U1234567", D1, ["1.5"]), data_dir=tmp_path
    )
    assert (
        path == tmp_path / "normalized/nav_daily/account_id=U1234567/date=2024-03-04/part-0.parquet"
    )
    back = pq.read_table(path)
    assert back.schema == SCHEMA
    assert back.column("value_base").to_pylist() == [Decimal("1.5")]


def test_rewrite_replaces_exactly(tmp_path):
    parquet.write_partition(
        "t", "U1234567", D1, rows("U1234567", D1, ["1", "2", "3"]), data_dir=tmp_path
    )
    parquet.write_partition("t", "U1234567", D1, rows("U1234567", D1, ["7"]), data_dir=tmp_path)
    table = parquet.read_table("t", data_dir=tmp_path)
    assert table.column("value_base").to_pylist() == [Decimal("7")]


def test_empty_partition_keeps_schema_and_clears_old_rows(tmp_path):
    parquet.write_partition(
        "t", "U1234567", D1, rows("U1234567", D1, ["1", "2"]), data_dir=tmp_path
    )
    path = parquet.write_partition("t", "U1234567", D1, SCHEMA.empty_table(), data_dir=tmp_path)
    back = pq.read_table(path)
    assert back.num_rows == 0
    assert back.schema == SCHEMA


def test_failure_mid_write_leaves_previous_file(tmp_path, monkeypatch):
    path = parquet.write_partition(
        "t", "U1234567", D1, rows("U1234567", D1, ["1", "2"]), data_dir=tmp_path
    )
    before = path.read_bytes()
    written = []

    def failing_fsync(tmp):
        written.append(tmp.read_bytes())  # the new content reached the temp file
        raise OSError("disk full")

    monkeypatch.setattr(storage, "_fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        parquet.write_partition("t", "U1234567", D1, rows("U1234567", D1, ["9"]), data_dir=tmp_path)
    assert written and written[0] != before
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["part-0.parquet"]


def test_unchanged_content_is_not_rewritten(tmp_path):
    table = rows("U1234567", D1, ["1"])
    path = parquet.write_partition("t", "U1234567", D1, table, data_dir=tmp_path)
    stamp = path.stat().st_mtime_ns
    parquet.write_partition("t", "U1234567", D1, table, data_dir=tmp_path)
    assert path.stat().st_mtime_ns == stamp


def test_rows_of_another_partition_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="account_id other than U1234567"):
        parquet.write_partition("t", "U1234567", D1, rows("U7654321", D1, ["1"]), data_dir=tmp_path)
    with pytest.raises(ValueError, match="date other than 2024-03-05"):
        parquet.write_partition("t", "U1234567", D2, rows("U1234567", D1, ["1"]), data_dir=tmp_path)
    assert not (tmp_path / "normalized").exists() or not any(
        (tmp_path / "normalized").rglob("*.parquet")
    )


def test_bad_names_are_rejected(tmp_path):
    with pytest.raises(InvalidAccountIdError):
        parquet.write_partition("t", "../etc", D1, SCHEMA.empty_table(), data_dir=tmp_path)
    with pytest.raises(ValueError, match="invalid table name"):
        parquet.write_partition("../t", "U1234567", D1, SCHEMA.empty_table(), data_dir=tmp_path)


def test_read_table_filters(tmp_path):
    for acct in ("U1111111", "U2222222"):
        for day in (D1, D2):
            parquet.write_partition("t", acct, day, rows(acct, day, ["1"]), data_dir=tmp_path)
    assert parquet.read_table("t", data_dir=tmp_path).num_rows == 4
    only = parquet.read_table("t", data_dir=tmp_path, account_ids=["U2222222"], start=D2)
    assert only.column("account_id").to_pylist() == ["U2222222"]
    assert only.column("date").to_pylist() == [D2]
    assert parquet.read_table("missing", data_dir=tmp_path).num_rows == 0
    assert parquet.table_names(tmp_path) == ["t"]


def test_day_file_holds_every_account_and_is_replaced_whole(tmp_path):
    both = pa.concat_tables([rows("U1111111", D1, ["1", "2"]), rows("U2222222", D1, ["3"])])
    path = parquet.write_day("nav_daily", D1, both, data_dir=tmp_path)
    assert path == tmp_path / "normalized/nav_daily/date=2024-03-04/part-0.parquet"
    assert pq.read_table(path).equals(both)
    parquet.write_day("nav_daily", D1, rows("U2222222", D1, ["7"]), data_dir=tmp_path)
    assert parquet.read_table("nav_daily", data_dir=tmp_path).column("value_base").to_pylist() == [
        Decimal("7")
    ]
    assert [
        (p.account_id, p.date) for p in parquet.list_partitions("nav_daily", data_dir=tmp_path)
    ] == [(None, D1)]


def test_day_file_rejects_other_dates_and_bad_account_ids(tmp_path):
    with pytest.raises(ValueError, match="date other than 2024-03-05"):
        parquet.write_day("t", D2, rows("U1234567", D1, ["1"]), data_dir=tmp_path)
    with pytest.raises(InvalidAccountIdError):
        parquet.write_day("t", D1, rows("U1|x", D1, ["1"]), data_dir=tmp_path)
    with pytest.raises(ValueError, match="without account_id"):
        parquet.write_day("t", D1, rows(None, D1, ["1"]), data_dir=tmp_path)
    assert not (tmp_path / "normalized").exists()


def test_read_table_filters_accounts_inside_day_files(tmp_path):
    for day in (D1, D2):
        both = pa.concat_tables([rows("U1111111", day, ["1"]), rows("U2222222", day, ["2"])])
        parquet.write_day("t", day, both, data_dir=tmp_path)
    assert parquet.read_table("t", data_dir=tmp_path).num_rows == 4
    only = parquet.read_table("t", data_dir=tmp_path, account_ids=["U2222222"], start=D2)
    assert only.select(["account_id", "date"]).to_pylist() == [
        {"account_id": "U2222222", "date": D2}
    ]
    one = parquet.read_day("t", D1, data_dir=tmp_path, account_id="U1111111")
    assert one.column("value_base").to_pylist() == [Decimal("1")]
    assert parquet.read_day("t", date(2024, 3, 6), data_dir=tmp_path) is None


def test_documented_pandas_read_of_a_table_folder(tmp_path):
    """README: pd.read_parquet(<table folder>, partitioning=None) reads every day file."""
    import pandas as pd

    parquet.write_day("t", D1, rows("U1111111", D1, ["1", "2"]), data_dir=tmp_path)
    parquet.write_day("t", D2, rows("U2222222", D2, ["3"]), data_dir=tmp_path)
    frame = pd.read_parquet(tmp_path / "normalized" / "t", partitioning=None)
    assert sorted(zip(frame["account_id"], frame["value_base"], strict=True)) == [
        ("U1111111", Decimal("1")),
        ("U1111111", Decimal("2")),
        ("U2222222", Decimal("3")),
    ]


def test_data_files_are_written_readable_by_everyone(tmp_path) -> None:
    from ibpipeline.storage import atomic_write_bytes

    target = tmp_path / "x" / "file.bin"
    atomic_write_bytes(target, b"data")
    assert target.stat().st_mode & 0o777 == 0o644
