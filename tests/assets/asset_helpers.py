"""Helpers shared by the asset tests."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from ibpipeline import settings
from ibpipeline.resources import DataDirResource, FlexResource
from ibpipeline.sim.flex_server import FlexSimulator


def make_resources(sim: FlexSimulator, query_id: str, data_dir: Path) -> dict:
    return {
        "flex": FlexResource(
            token=dg.EnvVar(settings.FLEX_TOKEN_ENV),
            query_id=query_id,
            base_url=sim.base_url,
            first_poll_delay_s=0.0,
            poll_interval_s=0.01,
            client_rate_limit=False,
        ),
        "data_dir": DataDirResource(path=str(data_dir)),
    }


def tree_digest(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``root``."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def make_query_resources(sim: FlexSimulator, queries, data_dir: Path) -> dict:
    """One fast ``FlexResource`` per ``FlexQuery`` (token from its ``EnvVar``) plus ``data_dir``."""
    return {
        **{
            q.resource_key: FlexResource(
                token=dg.EnvVar(q.token_env),
                query_id=q.query_id,
                query_name=q.name,
                base_url=sim.base_url,
                first_poll_delay_s=0.0,
                poll_interval_s=0.01,
                client_rate_limit=False,
            )
            for q in queries
        },
        "data_dir": DataDirResource(path=str(data_dir)),
    }
