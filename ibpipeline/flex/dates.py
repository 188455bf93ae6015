"""Flex date and date-time formats: detection per statement and vectorized conversion.

A Flex query writes every date in one of seven formats chosen in its General Configuration
(``yyyyMMdd``, ``yyyy-MM-dd``, ``MM/dd/yyyy``, ``MM/dd/yy``, ``dd/MM/yyyy``, ``dd/MM/yy``,
``dd-MMM-yy``) and every date-time as that date, an optional separator (``;``, ``,``, space, ``T``
or none) and a time ``HHmmss`` or ``HH:mm:ss``. A bare date in a date-time attribute means
midnight.

Detection: the candidates of a statement are the formats under which its ``fromDate``, ``toDate``
and the date part of ``whenGenerated`` are valid dates with ``fromDate <= toDate``. Only the
month-first/day-first pairs can stay ambiguous (every day and month field <= 12); the parser then
narrows the candidates with every date value of the statement's rows (:func:`narrow_formats`), and
if they still fit both, takes the month-first one (IBKR's listed order) and records a warning.

Two-digit years follow Python's ``%y`` pivot: ``69``-``99`` -> 1969-1999, ``00``-``68`` ->
2000-2068. Conversion is strict: an impossible date (``20250230``) raises :class:`DateParseError`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc

IBKR_TZ_NAME = "America/New_York"
IBKR_TZ = ZoneInfo(IBKR_TZ_NAME)

_MM = r"(0[1-9]|1[0-2])"
_DD = r"(0[1-9]|[12]\d|3[01])"
_MON = r"([A-Za-z]{3})"
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_TIME = r"[;, T]*(\d{2}):?(\d{2}):?(\d{2})"


class DateParseError(ValueError):
    """A date or date-time value that does not fit the statement's date format."""


@dataclass(frozen=True)
class DateFormat:
    """One IBKR date setting: ``pattern`` (regex, 3 groups) and ``iso`` (replacement to ISO order)."""

    name: str
    pattern: str
    iso: str
    two_digit_year: bool = False
    month_name: bool = False


DATE_FORMATS: tuple[DateFormat, ...] = (
    DateFormat("yyyyMMdd", rf"(\d{{4}}){_MM}{_DD}", r"\1-\2-\3"),
    DateFormat("yyyy-MM-dd", rf"(\d{{4}})-{_MM}-{_DD}", r"\1-\2-\3"),
    DateFormat("MM/dd/yyyy", rf"{_MM}/{_DD}/(\d{{4}})", r"\3-\1-\2"),
    DateFormat("MM/dd/yy", rf"{_MM}/{_DD}/(\d{{2}})", r"\3-\1-\2", two_digit_year=True),
    DateFormat("dd/MM/yyyy", rf"{_DD}/{_MM}/(\d{{4}})", r"\3-\2-\1"),
    DateFormat("dd/MM/yy", rf"{_DD}/{_MM}/(\d{{2}})", r"\3-\2-\1", two_digit_year=True),
    DateFormat(
        "dd-MMM-yy", rf"{_DD}-{_MON}-(\d{{2}})", r"\3-\2-\1", two_digit_year=True, month_name=True
    ),
)
FORMATS_BY_NAME: dict[str, DateFormat] = {f.name: f for f in DATE_FORMATS}


def _to_iso_date(value: str, fmt: DateFormat) -> str | None:
    """``value`` (a bare date) as ``YYYY-MM-DD`` under ``fmt``, or None when it does not match."""
    m = re.fullmatch(fmt.pattern, value)
    if m is None:
        return None
    iso = m.expand(fmt.iso)
    if fmt.month_name:
        mon = iso[3:6].upper()
        if mon not in _MONTHS:
            return None
        iso = f"{iso[:3]}{_MONTHS.index(mon) + 1:02d}{iso[6:]}"
    if fmt.two_digit_year:
        iso = ("19" if iso[:2] >= "69" else "20") + iso
    return iso


def parse_date(value: str, fmt: DateFormat) -> date:
    """One bare date under ``fmt``; raises DateParseError."""
    iso = _to_iso_date(value, fmt)
    try:
        if iso is None:
            raise ValueError
        return date.fromisoformat(iso)
    except ValueError:
        raise DateParseError(f"{value!r} is not a {fmt.name} date") from None


def parse_datetime_utc(value: str, fmt: DateFormat) -> datetime:
    """One Flex date-time (IBKR local time, America/New_York) as an aware UTC datetime."""
    hms = (0, 0, 0)
    if re.fullmatch(fmt.pattern, value):
        day = parse_date(value, fmt)
    else:
        m = re.fullmatch(rf"({fmt.pattern}){_TIME}", value)
        if m is None:
            raise DateParseError(f"{value!r} is not a {fmt.name} date-time")
        day = parse_date(m.group(1), fmt)
        hms = (int(m.group(5)), int(m.group(6)), int(m.group(7)))
    try:
        local = datetime(day.year, day.month, day.day, *hms, tzinfo=IBKR_TZ)
    except ValueError:
        raise DateParseError(f"{value!r} is not a {fmt.name} date-time") from None
    return local.astimezone(UTC)


def candidate_formats(
    from_date: str, to_date: str, generated: str | None
) -> tuple[DateFormat, ...]:
    """Formats under which a statement header is valid (``from_date <= to_date``), IBKR order."""
    out = []
    for fmt in DATE_FORMATS:
        try:
            start, end = parse_date(from_date, fmt), parse_date(to_date, fmt)
            if generated:
                parse_datetime_utc(generated, fmt)
        except DateParseError:
            continue
        if start <= end:
            out.append(fmt)
    return tuple(out)


def narrow_formats(candidates: Sequence[DateFormat], values: pa.Array) -> tuple[DateFormat, ...]:
    """The candidates under which every non-null value of ``values`` (dates or date-times) matches."""
    values = values.drop_null()
    if len(values) == 0:
        return tuple(candidates)
    return tuple(
        fmt
        for fmt in candidates
        if pc.all(pc.match_substring_regex(values, rf"^{fmt.pattern}(?:{_TIME})?$")).as_py()
    )


def _iso_strings(values: pa.Array, fmt: DateFormat, with_time: bool) -> pa.Array:
    """Rewrite matching values to ``YYYY-MM-DD`` (or ``YYYY-MM-DD HH:MM:SS``); others unchanged."""
    out = pc.replace_substring_regex(values, rf"^{fmt.pattern}$", fmt.iso)
    if with_time:
        out = pc.replace_substring_regex(out, rf"^{fmt.pattern}{_TIME}$", fmt.iso + r" \4:\5:\6")
    if fmt.month_name:
        for i, mon in enumerate(_MONTHS, start=1):
            out = pc.replace_substring_regex(out, rf"(?i)^(\d{{2}})-{mon}-", rf"\1-{i:02d}-")
    if fmt.two_digit_year:
        out = pc.replace_substring_regex(out, r"^([0-6]\d-\d\d-)", r"20\1")
        out = pc.replace_substring_regex(out, r"^([7-9]\d-\d\d-)", r"19\1")
    return out


def _first_bad(original: pa.Array, converted: pa.Array, fmt: DateFormat, with_time: bool) -> str:
    """The first original value that does not convert (for the error message)."""
    for raw, iso in zip(original.to_pylist(), converted.to_pylist(), strict=True):
        if raw is None:
            continue
        try:
            if with_time:
                datetime.fromisoformat(iso)
            else:
                date.fromisoformat(iso)
        except ValueError:
            return raw
    return "?"


def to_date32(values: pa.Array, fmt: DateFormat) -> pa.Array:
    """String dates under ``fmt`` -> ``date32``; nulls stay null; raises DateParseError."""
    iso = values if fmt.name == "yyyy-MM-dd" else _iso_strings(values, fmt, with_time=False)
    try:
        return pc.cast(iso, pa.date32())
    except pa.ArrowInvalid:
        bad = _first_bad(values, iso, fmt, with_time=False)
        raise DateParseError(f"{bad!r} is not a {fmt.name} date") from None


def to_utc_timestamp(values: pa.Array, fmt: DateFormat) -> pa.Array:
    """IBKR local date-times (America/New_York) -> ``timestamp[us, tz=UTC]``; raises DateParseError.

    Ambiguous local times (the repeated hour in November) take the earlier (EDT) instant;
    non-existent ones (the skipped hour in March) shift forward to 03:00 EDT.
    """
    iso = _iso_strings(values, fmt, with_time=True)
    try:
        naive = pc.cast(iso, pa.timestamp("us"))
    except pa.ArrowInvalid:
        bad = _first_bad(values, iso, fmt, with_time=True)
        raise DateParseError(f"{bad!r} is not a {fmt.name} date-time") from None
    local = pc.assume_timezone(naive, IBKR_TZ_NAME, ambiguous="earliest", nonexistent="latest")
    return local.cast(pa.timestamp("us", tz="UTC"))
