"""IB_GATEWAYS parsing and the value conversions of the snapshot schema."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from ibpipeline.gateway import GatewayAddress, GatewayConfigError, parse_gateways
from ibpipeline.gateway.schema import float_to_decimal, report_date, text_to_decimal


def test_parse_gateways_accepts_hosts_ports_and_ipv6():
    assert parse_gateways(" gw1.internal:4001, 127.0.0.1:4002 ,[::1]:4003") == [
        GatewayAddress("gw1.internal", 4001),
        GatewayAddress("127.0.0.1", 4002),
        GatewayAddress("::1", 4003),
    ]
    assert str(GatewayAddress("::1", 4003)) == "[::1]:4003"
    assert str(GatewayAddress("127.0.0.1", 4002)) == "127.0.0.1:4002"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        (" , ", "empty"),
        ("a:1,,b:2", "empty entry"),
        ("gateway", "host:port"),
        (":4001", "no host"),
        ("gw:0", "invalid port '0'"),
        ("gw:70000", "invalid port"),
        ("gw:abc", "invalid port 'abc'"),
        ("::1:4001", "host:port"),
        ("[::1]4001", r"\[ipv6\]:port"),
        ("gw:4001,gw:4001", "listed twice"),
    ],
)
def test_parse_gateways_rejects_bad_values_clearly(text, message):
    with pytest.raises(GatewayConfigError, match=message):
        parse_gateways(text)


def test_text_to_decimal_is_exact_and_skips_text():
    assert text_to_decimal("123456.78") == Decimal("123456.78")
    assert text_to_decimal("-0.9") == Decimal("-0.9")
    assert text_to_decimal("INDIVIDUAL") is None
    assert text_to_decimal("true") is None
    assert text_to_decimal("") is None
    assert text_to_decimal("1.7976931348623157E308") is None  # beyond decimal128(38, 10)


def test_float_to_decimal_round_trips_wire_values_and_maps_unset_to_none():
    assert float_to_decimal(float("1234567.89")) == Decimal("1234567.89")
    assert float_to_decimal(0.1) == Decimal("0.1")
    assert float_to_decimal(1.7976931348623157e308) is None
    assert float_to_decimal(float("nan")) is None
    assert float_to_decimal(None) is None


def test_report_date_is_the_us_eastern_date():
    assert report_date(datetime(2025, 1, 16, 3, 0, tzinfo=UTC)) == date(2025, 1, 15)
    assert report_date(datetime(2025, 7, 16, 5, 0, tzinfo=UTC)) == date(2025, 7, 16)
    with pytest.raises(ValueError, match="timezone-aware"):
        report_date(datetime(2025, 1, 16))
