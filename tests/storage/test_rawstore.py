from dataclasses import replace
from datetime import date, timedelta

import pytest

from ibpipeline.storage import rawstore

XML = b"<FlexQueryResponse queryName='q' type='AF'><FlexStatements count='0'/></FlexQueryResponse>"


def manifest(
    sha: str, size: int, fetched_at: str = "2024-03-06T07:00:00+00:00"
) -> rawstore.Manifest:
    return rawstore.Manifest(
        sha256=sha,
        size=size,
        from_date=date(2024, 3, 1),
        to_date=date(2024, 3, 5),
        accounts=("U1111111", "U2222222"),
        fetched_at=fetched_at,
    )


def test_put_statement_is_content_addressed_and_deduplicated(tmp_path):
    first = rawstore.put_statement(tmp_path, XML)
    assert first.written
    assert first.size == len(XML)
    assert first.path == tmp_path / "raw/flex/statements" / first.sha256[:2] / f"{first.sha256}.xml"
    mtime = first.path.stat().st_mtime_ns
    again = rawstore.put_statement(tmp_path, XML)
    assert not again.written
    assert again.sha256 == first.sha256
    assert first.path.stat().st_mtime_ns == mtime
    other = rawstore.put_statement(tmp_path, XML + b"\n")
    assert other.sha256 != first.sha256
    assert len(list((tmp_path / "raw/flex/statements").rglob("*.xml"))) == 2
    assert rawstore.read_statement(tmp_path, first.sha256) == XML


def test_read_statement_detects_missing_and_corrupt(tmp_path):
    stored = rawstore.put_statement(tmp_path, XML)
    stored.path.write_bytes(b"tampered")
    with pytest.raises(rawstore.RawStoreError, match="corrupt"):
        rawstore.read_statement(tmp_path, stored.sha256)
    with pytest.raises(rawstore.RawStoreError, match="not in the raw store"):
        rawstore.read_statement(tmp_path, "0" * 64)
    with pytest.raises(ValueError, match="sha256"):
        rawstore.statement_path(tmp_path, "../x")


def test_manifest_round_trip_and_idempotent_rewrite(tmp_path):
    stored = rawstore.put_statement(tmp_path, XML)
    m = manifest(stored.sha256, stored.size)
    days = [date(2024, 3, 1) + timedelta(days=i) for i in range(5)]
    assert rawstore.write_manifests(tmp_path, days, m) == 5
    assert rawstore.read_manifest(tmp_path, date(2024, 3, 3)) == rawstore.DayManifest((m,))
    assert (tmp_path / "raw/flex/by_date/2024-03-03.json").exists()
    # Same statement fetched again later: nothing rewritten, first fetched_at kept.
    later = manifest(stored.sha256, stored.size, fetched_at="2024-03-07T07:00:00+00:00")
    assert rawstore.write_manifests(tmp_path, days, later) == 0
    assert rawstore.read_manifest(tmp_path, date(2024, 3, 3)).newest.fetched_at == m.fetched_at
    # A different statement re-points the date; the old bytes stay.
    new = rawstore.put_statement(tmp_path, XML + b" ")
    assert rawstore.write_manifest(tmp_path, date(2024, 3, 3), manifest(new.sha256, new.size))
    assert rawstore.read_manifest(tmp_path, date(2024, 3, 3)).statements == (
        manifest(new.sha256, new.size),
    )
    assert rawstore.read_statement(tmp_path, stored.sha256) == XML
    assert rawstore.read_manifest(tmp_path, date(2024, 2, 1)) is None


def test_manifest_validation(tmp_path):
    m = manifest("a" * 64, 10)
    with pytest.raises(ValueError, match="outside the statement period"):
        rawstore.write_manifest(tmp_path, date(2024, 3, 6), m)
    with pytest.raises(ValueError, match="source"):
        rawstore.Manifest("a" * 64, 1, date(2024, 1, 1), date(2024, 1, 1), (), "x", source="ftp")
    bad = rawstore.manifest_path(tmp_path, date(2024, 3, 2))
    bad.parent.mkdir(parents=True)
    bad.write_text("{}")
    with pytest.raises(rawstore.RawStoreError, match="malformed manifest"):
        rawstore.read_manifest(tmp_path, date(2024, 3, 2))


def test_newest_statement_supplies_its_accounts_others_keep_theirs(tmp_path):
    day = date(2024, 3, 4)
    flex = manifest("a" * 64, 10)  # U1111111, U2222222
    rawstore.write_manifest(tmp_path, day, flex)
    inbox_one = replace(manifest("b" * 64, 5), accounts=("U2222222", "U3333333"), source="inbox")
    assert rawstore.write_manifest(tmp_path, day, inbox_one)
    current = rawstore.read_manifest(tmp_path, day)
    assert [(m.sha256[0], m.accounts) for m in current.statements] == [
        ("b", ("U2222222", "U3333333")),
        ("a", ("U1111111",)),
    ]
    assert current.accounts == ("U1111111", "U2222222", "U3333333")
    # a Flex re-fetch without U3333333 takes back its own accounts only
    refetch = manifest("c" * 64, 11)
    assert rawstore.write_manifest(tmp_path, day, refetch)
    assert [
        (m.sha256[0], m.accounts) for m in rawstore.read_manifest(tmp_path, day).statements
    ] == [
        ("c", ("U1111111", "U2222222")),
        ("b", ("U3333333",)),
    ]
    # storing the same statement again changes nothing
    assert not rawstore.write_manifest(tmp_path, day, replace(refetch, fetched_at="later"))


def test_overlapping_queries_give_one_supplier_whatever_the_order(tmp_path):
    """Two Flex queries delivering U2222222: the query whose name sorts first supplies it, in
    whichever order the two per-query steps store their statements."""
    day = date(2024, 3, 4)
    east = replace(manifest("e" * 64, 10), query="east")  # U1111111, U2222222
    west = replace(manifest("f" * 64, 10), accounts=("U2222222", "U3333333"), query="west")
    inbox_two = replace(manifest("b" * 64, 5), accounts=("U2222222",), source="inbox")
    results = []
    for order in ((east, west), (west, east)):
        folder = tmp_path / order[0].query
        for entry in order:
            rawstore.write_manifest(folder, day, entry)
        current = rawstore.read_manifest(folder, day)
        results.append(sorted((m.query, m.accounts) for m in current.statements))
        supplier = current.suppliers("trades", {})
        assert supplier == {"U1111111": "e" * 64, "U2222222": "e" * 64, "U3333333": "f" * 64}
        # a hand-downloaded file still takes over, as with a single query
        rawstore.write_manifest(folder, day, inbox_two)
        assert rawstore.read_manifest(folder, day).suppliers("trades", {})["U2222222"] == "b" * 64
    assert (
        results[0]
        == results[1]
        == [
            ("east", ("U1111111", "U2222222")),
            ("west", ("U3333333",)),
        ]
    )
    # a query whose every account is taken leaves the day unchanged; the query name round-trips
    only_taken = replace(west, sha256="9" * 64, accounts=("U1111111",))
    assert not rawstore.write_manifest(tmp_path / "west", day, only_taken)
    doc = east.to_doc()
    assert doc["query"] == "east" and rawstore.Manifest.from_doc(doc) == east
    assert "query" not in manifest("a" * 64, 1).to_doc()
