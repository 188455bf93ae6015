"""``IBKR_FLEX_QUERIES``: parsing, errors that name the entry (never a token), the default."""

import pytest

from ibpipeline import settings
from ibpipeline.flex.queries import (
    FlexQueriesConfigError,
    FlexQuery,
    missing_tokens,
    overlapping_accounts,
    parse_flex_queries,
)


def test_entries_in_order_with_their_token_variables():
    queries = parse_flex_queries(" east=800969:IBKR_FLEX_TOKEN_EAST , west=800970:TOKEN_WEST")
    assert queries == (
        FlexQuery("east", "800969", "IBKR_FLEX_TOKEN_EAST"),
        FlexQuery("west", "800970", "TOKEN_WEST"),
    )
    assert [q.resource_key for q in queries] == ["flex_east", "flex_west"]
    assert [q.op_name for q in queries] == ["fetch_east", "fetch_west"]
    assert queries[0].describe() == "query east (id 800969)"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "lists no query"),
        (" , ", "lists no query"),
        ("east=800969", r"entry 1 \('east=800969'\): expected name=query_id:TOKEN_ENV_VAR"),
        ("east:800969=TOKEN", "expected name=query_id:TOKEN_ENV_VAR"),
        ("East=800969:TOKEN", "query name 'East' must be a lower-case identifier"),
        ("a=1:T,,b=2:U", r"entry 2 \(''\): expected"),
        ("east=80x969:TOKEN", "query id '80x969' must be digits"),
        ("east=800969:", "'' is not an environment variable name"),
        ("east=800969:7310-5482", "never the token itself"),
        ("east=1:T,east=2:U", r"entry 2 .*'east' is used twice"),
    ],
)
def test_malformed_entries_are_named(raw, message):
    with pytest.raises(FlexQueriesConfigError, match=message):
        parse_flex_queries(raw)


def test_settings_default_to_the_single_query(monkeypatch):
    monkeypatch.delenv(settings.FLEX_QUERIES_ENV, raising=False)
    monkeypatch.setenv(settings.FLEX_QUERY_ID_ENV, "123456")
    assert settings.flex_queries() == (FlexQuery("default", "123456", "IBKR_FLEX_TOKEN"),)
    assert settings.flex_queries()[0].resource_key == "flex"
    assert settings.flex_queries()[0].pool("IBKR_FLEX_TOKEN") == "flex_api"
    monkeypatch.setenv(settings.FLEX_QUERIES_ENV, "a=1:TOKEN_A,b=2:TOKEN_A")
    queries = settings.flex_queries()
    assert [q.name for q in queries] == ["a", "b"]
    assert queries[0].pool("IBKR_FLEX_TOKEN") == queries[1].pool("IBKR_FLEX_TOKEN")
    monkeypatch.setenv(settings.FLEX_QUERIES_ENV, "a=1")
    with pytest.raises(ValueError, match="IBKR_FLEX_QUERIES entry 1"):
        settings.flex_queries()


def test_missing_tokens_name_the_query_and_variable(monkeypatch):
    monkeypatch.setenv("TEST_TOKEN_A", "731054826619374025548312")
    monkeypatch.delenv("TEST_TOKEN_B", raising=False)
    queries = parse_flex_queries("a=1:TEST_TOKEN_A,b=2:TEST_TOKEN_B")
    assert missing_tokens(queries) == ["query b (id 2): token variable TEST_TOKEN_B is not set"]


def test_overlapping_accounts():
    found = {"west": ("U2", "U3"), "east": ("U1", "U2"), "north": ("U4",)}
    assert overlapping_accounts(found) == {"U2": ["east", "west"]}
