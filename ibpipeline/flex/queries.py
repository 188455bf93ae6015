"""Several Flex queries: parsing ``$IBKR_FLEX_QUERIES`` and checking which accounts overlap.

An advisor's accounts may be split over several Activity Flex queries, each ``(token, query id)``
with its own IBKR rate limit. ``$IBKR_FLEX_QUERIES`` lists them as comma-separated
``name=query_id:TOKEN_ENV_VAR`` entries, e.g. ``east=800969:IBKR_FLEX_TOKEN_EAST``. The entry names
the environment variable holding the token, never the token itself: Dagster resolves it at run
time (``dg.EnvVar``), so no token reaches run config, logs or metadata.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

DEFAULT_QUERY_NAME = "default"
"""Name of the single query configured by ``$IBKR_FLEX_TOKEN`` and ``$IBKR_FLEX_QUERY_ID``."""

QUERY_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
QUERY_ID_RE = re.compile(r"^[0-9]{1,20}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class FlexQueriesConfigError(ValueError):
    """``$IBKR_FLEX_QUERIES`` is malformed or names a token variable that is not set."""


@dataclass(frozen=True)
class FlexQuery:
    """One Flex query: a short ``name`` (lower-case identifier, used in step names, resource keys
    and manifests), its Activity Flex ``query_id`` and the environment variable of its token."""

    name: str
    query_id: str
    token_env: str

    @property
    def resource_key(self) -> str:
        """Dagster resource key of its ``FlexResource`` (``flex`` for the default query)."""
        return "flex" if self.name == DEFAULT_QUERY_NAME else f"flex_{self.name}"

    @property
    def op_name(self) -> str:
        """Name of its fetch step inside ``raw_flex_statement``."""
        return f"fetch_{self.name}"

    def pool(self, default_token_env: str) -> str:
        """Dagster pool of its fetch step: one pool per token variable (queries sharing a token
        share a pool); ``flex_api`` for the default token variable."""
        if self.token_env == default_token_env:
            return "flex_api"
        return f"flex_api_{self.token_env.lower()}"

    def describe(self) -> str:
        """``query <name> (id <query_id>)``: how errors and logs name it (never the token)."""
        return f"query {self.name} (id {self.query_id})"


def parse_flex_queries(raw: str, variable: str = "IBKR_FLEX_QUERIES") -> tuple[FlexQuery, ...]:
    """Queries of a ``name=query_id:TOKEN_ENV_VAR[,...]`` list, in the order given.

    Raises FlexQueriesConfigError naming the entry (by position and text, which holds no token)
    when an entry is malformed, a name repeats or the list is empty.
    """
    queries: list[FlexQuery] = []
    entries = [e.strip() for e in raw.split(",")]
    if not any(entries):
        raise FlexQueriesConfigError(f"{variable} is set but lists no query")
    for position, entry in enumerate(entries, start=1):
        where = f"{variable} entry {position} ({entry!r})"
        name, eq, rest = entry.partition("=")
        query_id, colon, token_env = rest.partition(":")
        name, query_id, token_env = name.strip(), query_id.strip(), token_env.strip()
        if not (eq and colon):
            raise FlexQueriesConfigError(
                f"{where}: expected name=query_id:TOKEN_ENV_VAR, e.g. east=800969:IBKR_FLEX_TOKEN_EAST"
            )
        if not QUERY_NAME_RE.fullmatch(name):
            raise FlexQueriesConfigError(
                f"{where}: query name {name!r} must be a lower-case identifier "
                "([a-z][a-z0-9_]*, at most 40 characters)"
            )
        if not QUERY_ID_RE.fullmatch(query_id):
            raise FlexQueriesConfigError(f"{where}: query id {query_id!r} must be digits")
        if not ENV_NAME_RE.fullmatch(token_env):
            raise FlexQueriesConfigError(
                f"{where}: {token_env!r} is not an environment variable name (put the name of the "
                "variable holding the token here, never the token itself)"
            )
        if any(q.name == name for q in queries):
            raise FlexQueriesConfigError(f"{where}: query name {name!r} is used twice")
        queries.append(FlexQuery(name, query_id, token_env))
    return tuple(queries)


def missing_tokens(queries: Iterable[FlexQuery]) -> list[str]:
    """One line per query whose token variable is unset or empty (names, never values)."""
    return [
        f"{q.describe()}: token variable {q.token_env} is not set"
        for q in queries
        if not os.environ.get(q.token_env)
    ]


def overlapping_accounts(accounts_by_query: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """``account -> query names`` (sorted) for every account delivered by more than one query."""
    seen: dict[str, list[str]] = {}
    for name in sorted(accounts_by_query):
        for account in accounts_by_query[name]:
            seen.setdefault(account, [])
            if name not in seen[account]:
                seen[account].append(name)
    return {a: names for a, names in sorted(seen.items()) if len(names) > 1}
