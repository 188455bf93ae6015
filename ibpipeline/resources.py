"""Dagster resources: the Flex Web Service client, the IB Gateways and the data folder.

Build ``FlexResource`` with ``token=dg.EnvVar("IBKR_FLEX_TOKEN")`` (see ``definitions.py``): Dagster
then resolves the token at run time and shows only the variable's name. With several Flex queries
there is one ``FlexResource`` per query (``flex_<name>``), each with the ``EnvVar`` of its token.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import dagster as dg
from pydantic import Field

from ibpipeline.flex.client import DEFAULT_GET_STATEMENT_URL, DEFAULT_SEND_REQUEST_URL, FlexClient
from ibpipeline.gateway.collector import (
    DEFAULT_CLIENT_ID,
    CollectionResult,
    GatewayAddress,
    collect_snapshots,
    parse_gateways,
)


class FlexResource(dg.ConfigurableResource):
    """Configuration of the Flex Web Service client (times in seconds)."""

    token: str = Field(
        description="Flex Web Service token; always pass dg.EnvVar('IBKR_FLEX_TOKEN')."
    )
    query_id: str = Field(description="Activity Flex Query id.")
    query_name: str | None = Field(
        default=None,
        description="Name of the query when several are configured ($IBKR_FLEX_QUERIES); logs, "
        "errors and manifests name the query by it.",
    )
    base_url: str | None = Field(
        default=None,
        description="Overrides both endpoints with <base_url>/SendRequest and <base_url>/GetStatement "
        "(e.g. the local simulator).",
    )
    send_request_url: str = DEFAULT_SEND_REQUEST_URL
    get_statement_url: str = DEFAULT_GET_STATEMENT_URL
    first_poll_delay_s: float = Field(default=5.0, description="Wait after SendRequest.")
    poll_interval_s: float = Field(default=5.0, description="First interval between 1019 polls.")
    poll_deadline_s: float = Field(default=600.0, description="Give up polling after this long.")
    timeout_s: float = Field(default=60.0, description="HTTP timeout per request.")
    client_rate_limit: bool = Field(
        default=True,
        description="Enforce IBKR's 1 request/s and 10/min per token in this process. Disable "
        "only against a local simulator.",
    )

    def client(self, logger: logging.Logger | None = None) -> FlexClient:
        """A new ``FlexClient`` (use it as a context manager so connections are closed)."""
        return FlexClient(
            self.token,
            base_url=self.base_url,
            send_request_url=self.send_request_url,
            get_statement_url=self.get_statement_url,
            first_poll_delay=self.first_poll_delay_s,
            poll_interval=self.poll_interval_s,
            poll_deadline=self.poll_deadline_s,
            timeout=self.timeout_s,
            limiter="shared" if self.client_rate_limit else None,
            logger=logger,
        )


class DataDirResource(dg.ConfigurableResource):
    """Root of raw data, normalized Parquet and the DuckDB file (``$IBPIPELINE_DATA_DIR``)."""

    path: str = Field(description="Data folder; relative paths resolve against the working dir.")

    def root(self) -> Path:
        """The data folder as an absolute path."""
        return Path(self.path).resolve()


class GatewayResource(dg.ConfigurableResource):
    """How to reach the IB Gateways for read-only snapshots (times in seconds)."""

    gateways: list[str] = Field(description="host:port of every gateway (from $IB_GATEWAYS).")
    client_id: int = Field(default=DEFAULT_CLIENT_ID, description="API client id ($IB_CLIENT_ID).")
    timeout_s: float = Field(default=4.0, description="Per step: connect, each account, summary.")
    retries: int = Field(default=2, description="Extra attempts per gateway after the first.")
    backoff_s: float = Field(default=1.0, description="Sleep before the first retry, doubling.")
    pnl_timeout_s: float = Field(default=2.0, description="Wait for every account's first PnL.")
    as_of: str | None = Field(
        default=None,
        description="Stamp captures with this ISO-8601 instant (with offset) instead of now, e.g. "
        "against a simulator whose clock is frozen. Leave unset for real gateways.",
    )

    def addresses(self) -> list[GatewayAddress]:
        """The parsed gateway list; raises GatewayConfigError when empty or malformed."""
        return parse_gateways(",".join(self.gateways))

    def capture_instant(self) -> datetime | None:
        """``as_of`` as an aware datetime (None = now); raises ValueError when it has no offset."""
        if self.as_of is None:
            return None
        at = datetime.fromisoformat(self.as_of)
        if at.tzinfo is None:
            raise ValueError(f"as_of must carry a UTC offset, got {self.as_of!r}")
        return at

    def collect(self) -> CollectionResult:
        """One snapshot of every gateway (blocking). Raises GatewayCollectionError naming every
        gateway when none could be read."""
        at = self.capture_instant()
        return collect_snapshots(
            self.addresses(),
            client_id=self.client_id,
            timeout=self.timeout_s,
            retries=self.retries,
            backoff=self.backoff_s,
            pnl_timeout=self.pnl_timeout_s,
            clock=None if at is None else (lambda: at),
        )
