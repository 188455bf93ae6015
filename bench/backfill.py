"""Backfill benchmark: N accounts x D days through Dagster into the normalized tables.

Usage::

    .venv/bin/python bench/backfill.py                         # 100 accounts x 365 days
    .venv/bin/python bench/backfill.py --accounts 10 --days 90

Starts the real Flex simulator on loopback over a simulated world, then runs exactly what
``ibpipeline backfill`` runs (``ibpipeline.automation.backfill.run_backfill``) in a throwaway
SQLite Dagster instance: one ``flex_raw_job`` range run, then one ``flex_normalize_job`` range run
over all accounts. Prints the wall time of each phase, the Flex requests the simulator logged,
how many statements were parsed and how many partition files were written. Exits 1 when a target
is missed: wall time <= 300 s (default size) and one SendRequest per <= 365-day window.
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

TARGET_SECONDS = 300.0
QUERY_ID = "900042"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2024, 1, 2))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--normalize",
        choices=("dagster", "direct"),
        default="dagster",
        help="dagster: run_backfill (raw run + normalize run); direct: the raw run through "
        "Dagster, then the normalize asset's own function normalize_partitions() without Dagster "
        "event bookkeeping (isolates the data-plane cost)",
    )
    args = parser.parse_args(argv)

    import dagster as dg

    import ibpipeline.assets.normalized as normalized
    from ibpipeline import settings
    from ibpipeline.assets import flex_assets
    from ibpipeline.automation.backfill import run_backfill
    from ibpipeline.automation.jobs import flex_normalize_job, flex_raw_job
    from ibpipeline.flex.ratelimit import RateLimit
    from ibpipeline.resources import DataDirResource, FlexResource
    from ibpipeline.sim.flex_server import FlexSimulator, world_statement_source
    from ibpipeline.storage import parquet
    from ibpipeline.world import World

    start = args.start
    end = start + timedelta(days=args.days - 1)
    token = "".join(secrets.choice("0123456789") for _ in range(24))
    os.environ[settings.FLEX_TOKEN_ENV] = token
    parses = []
    real_parse = normalized.parse_statement
    normalized.parse_statement = lambda *a, **k: parses.append(1) or real_parse(*a, **k)

    world = World(seed=args.seed, n_accounts=args.accounts, inception=start)
    source = world_statement_source(world)
    tmp = Path(tempfile.mkdtemp(prefix="ibp-bench-"))
    (tmp / "home").mkdir()
    with (
        FlexSimulator(source, token, {QUERY_ID}, rate_limits=(RateLimit(1000, 1.0),)) as sim,
        dg.instance_for_test(temp_dir=str(tmp / "home")) as instance,
    ):
        data_dir = tmp / "data"
        defs = dg.Definitions(
            assets=flex_assets,
            jobs=[flex_raw_job, flex_normalize_job],
            resources={
                "flex": FlexResource(
                    token=dg.EnvVar(settings.FLEX_TOKEN_ENV),
                    query_id=QUERY_ID,
                    base_url=sim.base_url,
                    first_poll_delay_s=0.0,
                    poll_interval_s=0.05,
                    client_rate_limit=False,
                ),
                "data_dir": DataDirResource(path=str(data_dir)),
            },
        )
        began = time.perf_counter()
        if args.normalize == "dagster":
            result = run_backfill(defs, instance, start, end)
            raw_run = instance.get_run_stats(result.raw_run_id)
            raw_s = raw_run.end_time - raw_run.start_time
            norm_runs = [instance.get_run_stats(r) for r in result.normalize_run_ids]
            norm_s = sum(r.end_time - r.start_time for r in norm_runs)
        else:
            raw = run_backfill(defs, instance, start, end, accounts=[])
            raw_stats = instance.get_run_stats(raw.raw_run_id)
            raw_s = raw_stats.end_time - raw_stats.start_time
            norm_began = time.perf_counter()
            keys = instance.get_dynamic_partitions("account")
            days = [start + timedelta(days=i) for i in range(args.days)]
            normalized.normalize_partitions(
                data_dir, [(a, d) for a in keys for d in days], normalized.NORMALIZED_TABLES
            )
            norm_runs = []
            norm_s = time.perf_counter() - norm_began
        wall = time.perf_counter() - began
        sends = sim.count("SendRequest")
        gets = sim.count("GetStatement")
        partitions = len(parquet.list_partitions("nav_daily", data_dir=data_dir))
        nav_rows = parquet.read_table("nav_daily", data_dir=data_dir).num_rows

    windows = math.ceil(args.days / 365)
    print(
        f"backfill {args.accounts} accounts x {args.days} days ({start}..{end}), {args.normalize}"
    )
    print(f"  wall time              {wall:8.1f} s   (target <= {TARGET_SECONDS:.0f} s)")
    print(f"    raw run              {raw_s:8.1f} s   (render + serve + fetch + store)")
    print(f"    normalize            {norm_s:8.1f} s   ({len(norm_runs)} Dagster run(s))")
    print(f"  Flex SendRequest       {sends:8d}     (expected {windows}: one per <= 365 days)")
    print(f"  Flex GetStatement      {gets:8d}")
    print(f"  statements parsed      {len(parses):8d}")
    print(f"  nav_daily partitions   {partitions:8d}   rows {nav_rows}")
    missed = sends != windows or len(parses) != windows
    if args.accounts == 100 and args.days == 365 and args.normalize == "dagster":
        missed |= wall > TARGET_SECONDS
    shutil.rmtree(tmp, ignore_errors=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
