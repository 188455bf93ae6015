"""IB Gateway snapshots: the ib_async collector and the snapshot table schemas."""

from ibpipeline.gateway.collector import (
    CollectionResult,
    GatewayAddress,
    GatewayCollectionError,
    GatewayConfigError,
    GatewayOutcome,
    collect_snapshots,
    collect_snapshots_async,
    list_managed_accounts,
    parse_gateways,
    to_jsonl,
)

__all__ = [
    "CollectionResult",
    "GatewayAddress",
    "GatewayCollectionError",
    "GatewayConfigError",
    "GatewayOutcome",
    "collect_snapshots",
    "collect_snapshots_async",
    "list_managed_accounts",
    "parse_gateways",
    "to_jsonl",
]
