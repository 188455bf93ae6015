"""Flex date formats: the tolerant converters and format detection (ibpipeline.flex.dates)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

import pyarrow as pa
import pytest

from ibpipeline.flex.dates import (
    FORMATS_BY_NAME,
    DateParseError,
    candidate_formats,
    narrow_formats,
    parse_date_any,
    parse_datetime_any,
    to_date32,
    to_date32_tolerant,
    to_utc_timestamp_tolerant,
)

YMD = FORMATS_BY_NAME["yyyyMMdd"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20250304", date(2025, 3, 4)),
        ("2025-03-04", date(2025, 3, 4)),
        ("03/25/2025", date(2025, 3, 25)),
        ("25/03/2025", date(2025, 3, 25)),
        ("03/25/25", date(2025, 3, 25)),
        ("25/03/25", date(2025, 3, 25)),
        ("04-Mar-25", date(2025, 3, 4)),
        ("04-MAR-99", date(1999, 3, 4)),
        ("04/04/2025", date(2025, 4, 4)),  # both orders agree
    ],
)
def test_a_date_in_any_format_that_one_reading_fits(value, expected):
    assert parse_date_any(value, YMD) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("03/04/2025", "is ambiguous (MM/dd/yyyy or dd/MM/yyyy)"),
        ("20250230", "is not a date in any Flex format"),
        ("2025.03.04", "is not a date in any Flex format"),
    ],
)
def test_a_date_in_no_or_two_readings_raises(value, message):
    with pytest.raises(DateParseError, match=re.escape(f"{value!r} {message}")):
        parse_date_any(value, YMD)


def test_the_statement_format_wins_over_the_others():
    dmy = FORMATS_BY_NAME["dd/MM/yyyy"]
    assert parse_date_any("03/04/2025", dmy) == date(2025, 4, 3)
    assert parse_datetime_any("03/04/2025;120000", dmy) == datetime(2025, 4, 3, 16, tzinfo=UTC)


def test_tolerant_dates_match_the_strict_path_and_null_the_rest():
    values = pa.array(["20250304", None, "20240229", "20250230", "2025-03-05", "20251301"])
    typed, bad = to_date32_tolerant(values, YMD)
    assert typed.type == pa.date32()
    assert typed.to_pylist() == [
        date(2025, 3, 4),
        None,
        date(2024, 2, 29),
        None,
        date(2025, 3, 5),
        None,
    ]
    assert bad == [
        (3, "20250230", "is not a date in any Flex format"),
        (5, "20251301", "is not a date in any Flex format"),
    ]
    good = pa.array(["20250304", None, "20240229"])
    assert to_date32_tolerant(good, YMD) == (to_date32(good, YMD), [])


def test_tolerant_date_times_with_zones_and_rollover_checks():
    values = pa.array(
        [
            "20251102;013000",  # repeated hour: the earlier (EDT) instant, as the fast path
            "20250309;023000",  # skipped hour: shifted to 03:00 EDT
            "20250304;093060",  # 60 seconds: not a time
            "20250304",  # bare date: midnight New York
            "20250304;093000 UTC",
            None,
        ]
    )
    typed, bad = to_utc_timestamp_tolerant(values, YMD)
    assert typed.type == pa.timestamp("us", tz="UTC")
    assert typed.to_pylist() == [
        datetime(2025, 11, 2, 5, 30, tzinfo=UTC),
        datetime(2025, 3, 9, 7, 0, tzinfo=UTC),
        None,
        datetime(2025, 3, 4, 5, 0, tzinfo=UTC),
        datetime(2025, 3, 4, 9, 30, tzinfo=UTC),
        None,
    ]
    assert bad == [(2, "20250304;093060", "is not a date-time in any Flex format")]


def test_header_candidates_ignore_a_when_generated_that_fits_none():
    assert candidate_formats("20250301", "20250331", "garbage") == (YMD,)
    assert candidate_formats("20250301", "20250331", "20250401;101500 EDT") == (YMD,)
    assert candidate_formats("01/02/2025", "01/03/2025", "2025-03-04") == (
        FORMATS_BY_NAME["MM/dd/yyyy"],
        FORMATS_BY_NAME["dd/MM/yyyy"],
    )


def test_narrowing_keeps_the_formats_that_fit_most_values():
    mdy, dmy = FORMATS_BY_NAME["MM/dd/yyyy"], FORMATS_BY_NAME["dd/MM/yyyy"]
    values = pa.array(["25/02/2025", "26/02/2025", "2025.02.27", None])
    assert narrow_formats((mdy, dmy), values) == (dmy,)
    assert narrow_formats((mdy, dmy), pa.array(["01/02/2025", "x"])) == (mdy, dmy)


def test_the_value_by_value_path_treats_new_york_gaps_like_the_vectorized_one():
    # another format than the statement's goes value by value; same instants as Arrow
    assert parse_datetime_any("2025-03-09 02:30:00", YMD) == datetime(2025, 3, 9, 7, tzinfo=UTC)
    assert parse_datetime_any("2025-11-02 01:30:00", YMD) == datetime(
        2025, 11, 2, 5, 30, tzinfo=UTC
    )
    assert parse_datetime_any("2025-03-09 03:30:00", YMD) == datetime(2025, 3, 9, 7, 30, tzinfo=UTC)
