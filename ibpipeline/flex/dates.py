"""Flex date and date-time formats: detection per statement and vectorized conversion.

A Flex query writes every date in one of seven formats chosen in its General Configuration
(``yyyyMMdd``, ``yyyy-MM-dd``, ``MM/dd/yyyy``, ``MM/dd/yy``, ``dd/MM/yyyy``, ``dd/MM/yy``,
``dd-MMM-yy``) and every date-time as that date, an optional separator (``;``, ``,`` + space,
space, ``T`` or none), a time ``HHmmss`` or ``HH:mm:ss`` and an optional zone: none, ``EDT``,
``EST`` or ``ET`` mean America/New_York local time; ``UTC``, ``GMT`` and ``Z`` mean UTC. A bare
date in a date-time attribute means midnight.

Detection: the candidates of a statement are the formats under which its ``fromDate``, ``toDate``
and the date part of ``whenGenerated`` are valid dates with ``fromDate <= toDate``. Only the
month-first/day-first pairs can stay ambiguous (every day and month field <= 12); the parser then
narrows the candidates with every date value of the statement's rows (:func:`narrow_formats`), and
if they still fit both, takes the month-first one (IBKR's listed order) and records a warning.
When some row values fit no candidate, the candidates that fit the most values win.

Conversion: a whole column is converted in the statement's format (fast path, :func:`to_date32`,
:func:`to_utc_timestamp`, which raise). Only a column that fails goes through the tolerant path
(:func:`to_date32_tolerant`, :func:`to_utc_timestamp_tolerant`): vectorized in the statement's
format (zones allowed), then value by value for the rest: a value in another format is converted
when the formats it fits agree on its instant (e.g. ``2013-03-05, 19:45:00`` inside a ``yyyyMMdd``
statement); a value that fits none (or fits two that disagree) is reported, never raised.

Two-digit years follow Python's ``%y`` pivot: ``69``-``99`` -> 1969-1999, ``00``-``68`` ->
2000-2068. An impossible date (``20250230``) fits no format.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

IBKR_TZ_NAME = "America/New_York"
IBKR_TZ = ZoneInfo(IBKR_TZ_NAME)

_MM = r"(0[1-9]|1[0-2])"
_DD = r"(0[1-9]|[12]\d|3[01])"
_MON = r"([A-Za-z]{3})"
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_TIME = r"[;, T]*(\d{2}):?(\d{2}):?(\d{2})"
_ZONE = r"\s*(EDT|EST|ET|UTC|GMT|Z)$"
_UTC_ZONES = frozenset({"UTC", "GMT", "Z"})


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


def _split_zone(value: str) -> tuple[str, bool]:
    """``value`` without a trailing zone, and whether that zone was UTC (else New York)."""
    m = re.search(_ZONE, value)
    if m is None:
        return value, False
    return value[: m.start()], m.group(1) in _UTC_ZONES


def _naive(value: str, fmt: DateFormat, with_time: bool) -> datetime | None:
    """``value`` (a date, or with ``with_time`` a date-time without zone) under ``fmt``, or None."""
    m = re.fullmatch(rf"({fmt.pattern})(?:{_TIME})?" if with_time else fmt.pattern, value)
    if m is None:
        return None
    iso = _to_iso_date(m.group(1) if with_time else value, fmt)
    try:
        day = date.fromisoformat(iso) if iso else None
        if day is None:
            return None
        hms = (
            (int(m.group(5)), int(m.group(6)), int(m.group(7))) if with_time and m.group(5) else ()
        )
        return datetime(day.year, day.month, day.day, *hms)
    except ValueError:
        return None


def _aware(naive: datetime, utc: bool) -> datetime:
    """As :func:`to_utc_timestamp`: a repeated New York hour takes the earlier instant, a skipped
    one the first instant after the gap."""
    if utc:
        return naive.replace(tzinfo=UTC)
    local = naive
    while local.replace(tzinfo=IBKR_TZ).astimezone(UTC).astimezone(IBKR_TZ).replace(
        tzinfo=None
    ) != local and local - naive < timedelta(hours=3):
        local = local.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return local.replace(tzinfo=IBKR_TZ).astimezone(UTC)


def parse_datetime_utc(value: str, fmt: DateFormat) -> datetime:
    """One Flex date-time under ``fmt`` (New York time unless a UTC zone follows) in UTC."""
    body, utc = _split_zone(value)
    naive = _naive(body, fmt, with_time=True)
    if naive is None:
        raise DateParseError(f"{value!r} is not a {fmt.name} date-time")
    return _aware(naive, utc)


def _parse_any(value: str, fmt: DateFormat, with_time: bool) -> tuple[datetime, bool]:
    """``value`` under ``fmt``, else under the other formats if they agree; (naive, is UTC)."""
    body, utc = _split_zone(value) if with_time else (value, False)
    naive = _naive(body, fmt, with_time)
    if naive is not None:
        return naive, utc
    found: dict[datetime, str] = {}
    for other in DATE_FORMATS:
        if other is not fmt and (hit := _naive(body, other, with_time)) is not None:
            found.setdefault(hit, other.name)
    what = "date-time" if with_time else "date"
    if len(found) > 1:
        raise DateParseError(f"{value!r} is ambiguous ({' or '.join(found.values())})")
    if not found:
        raise DateParseError(f"{value!r} is not a {what} in any Flex format")
    return next(iter(found)), utc


def parse_date_any(value: str, fmt: DateFormat) -> date:
    """A bare date under ``fmt``, else under the one other format it fits; raises DateParseError."""
    return _parse_any(value, fmt, with_time=False)[0].date()


def parse_datetime_any(value: str, fmt: DateFormat) -> datetime:
    """A date-time under ``fmt``, else under the one other format it fits, in UTC; raises
    DateParseError."""
    return _aware(*_parse_any(value, fmt, with_time=True))


def candidate_formats(
    from_date: str, to_date: str, generated: str | None
) -> tuple[DateFormat, ...]:
    """Formats under which a statement header is valid (``from_date <= to_date``), IBKR order;
    those under which ``generated`` is valid too, unless it fits none of them."""
    out = []
    for fmt in DATE_FORMATS:
        try:
            start, end = parse_date(from_date, fmt), parse_date(to_date, fmt)
        except DateParseError:
            continue
        if start <= end:
            out.append(fmt)
    if not generated:
        return tuple(out)
    with_generated = []
    for fmt in out:
        try:
            parse_datetime_utc(generated, fmt)
        except DateParseError:
            continue
        with_generated.append(fmt)
    return tuple(with_generated or out)


def narrow_formats(candidates: Sequence[DateFormat], values: pa.Array) -> tuple[DateFormat, ...]:
    """The candidates under which the most non-null ``values`` (dates or date-times) match
    (every value, when any candidate fits them all)."""
    values = values.drop_null()
    if len(values) == 0:
        return tuple(candidates)
    misses = {
        fmt: len(values)
        - pc.sum(pc.match_substring_regex(values, rf"^{fmt.pattern}(?:{_TIME})?$")).as_py()
        for fmt in candidates
    }
    fewest = min(misses.values(), default=0)
    return tuple(fmt for fmt in candidates if misses[fmt] == fewest)


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


def _fill_failed(
    converted: pa.Array, values: pa.Array, fmt: DateFormat, with_time: bool
) -> tuple[pa.Array, list[tuple[int, str, str]]]:
    """Convert value by value where ``converted`` is null but ``values`` is not; the rest stay."""
    failed = pc.and_(values.is_valid(), converted.is_null())
    at = np.flatnonzero(failed.to_numpy(zero_copy_only=False))
    if len(at) == 0:
        return converted, []
    raw = values.take(pa.array(at)).to_pylist()
    fixed, bad = [], []
    for i, value in zip(at.tolist(), raw, strict=True):
        try:
            if with_time:
                fixed.append(parse_datetime_any(value, fmt))
            else:
                fixed.append(parse_date_any(value, fmt))
        except DateParseError as exc:
            fixed.append(None)
            bad.append((i, value, str(exc).removeprefix(f"{value!r} ")))
    return pc.replace_with_mask(converted, failed, pa.array(fixed, converted.type)), bad


def to_date32_tolerant(
    values: pa.Array, fmt: DateFormat
) -> tuple[pa.Array, list[tuple[int, str, str]]]:
    """Like :func:`to_date32`, but a value that fits no format is null: returns the array and
    ``(index, raw value, problem)`` of each such value."""
    iso = values if fmt.name == "yyyy-MM-dd" else _iso_strings(values, fmt, with_time=False)
    parsed = pc.strptime(iso, format="%Y-%m-%d", unit="s", error_is_null=True)
    # strptime rolls impossible dates over (02-30 -> 03-02): keep only those that round-trip
    same = pc.equal(pc.strftime(parsed, format="%Y-%m-%d"), iso)
    days = pc.if_else(same, parsed, pa.scalar(None, parsed.type)).cast(pa.date32())
    return _fill_failed(days, values, fmt, with_time=False)


def to_utc_timestamp_tolerant(
    values: pa.Array, fmt: DateFormat
) -> tuple[pa.Array, list[tuple[int, str, str]]]:
    """Like :func:`to_utc_timestamp`, with zones (``EDT``/``EST``/``ET`` New York, ``UTC``/``GMT``/
    ``Z`` UTC), and a value that fits no format null: returns the array and ``(index, raw value,
    problem)`` of each such value."""
    body = pc.replace_substring_regex(values, _ZONE, "")
    is_utc = pc.fill_null(pc.match_substring_regex(values, r"(UTC|GMT|Z)$"), False)
    iso = _iso_strings(body, fmt, with_time=True)
    iso = pc.replace_substring_regex(iso, r"^(\d{4}-\d\d-\d\d)$", r"\1 00:00:00")
    fmt_iso = "%Y-%m-%d %H:%M:%S"
    naive = pc.strptime(iso, format=fmt_iso, unit="s", error_is_null=True)
    naive = pc.if_else(pc.equal(pc.strftime(naive, format=fmt_iso), iso), naive, None)
    naive = naive.cast(pa.timestamp("us"))
    utc_type = pa.timestamp("us", tz="UTC")
    local = pc.assume_timezone(naive, IBKR_TZ_NAME, ambiguous="earliest", nonexistent="latest")
    out = pc.if_else(is_utc, pc.assume_timezone(naive, "UTC"), local.cast(utc_type))
    return _fill_failed(out, values, fmt, with_time=True)
