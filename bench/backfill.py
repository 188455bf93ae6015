"""Backfill benchmark: N accounts x D days through Dagster into the normalized tables.

Usage::

    .venv/bin/python bench/backfill.py                         # 100 accounts x 365 days
    .venv/bin/python bench/backfill.py --accounts 10 --days 90
    .venv/bin/python bench/backfill.py --accounts 10 --days 90 --marts   # + dbt marts

Starts the real Flex simulator on loopback over a simulated world, then runs exactly what
``ibpipeline backfill --no-marts`` runs (``ibpipeline.automation.backfill.run_backfill``) in a
throwaway SQLite Dagster instance: ONE ``flex_daily_job`` range run (raw statements, normalized
tables, DuckDB views). Prints the wall time and each step's time, the Flex requests the simulator
logged, how many statements were parsed and how many files were written. Exits 1 when a target
is missed: wall time <= 300 s (default size, without marts), one SendRequest per <= 365-day
window, each statement parsed once.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
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
    parser.add_argument("--marts", action="store_true", help="also build the dbt marts")
    args = parser.parse_args(argv)

    import dagster as dg

    import ibpipeline.assets.normalized as normalized
    from ibpipeline import settings
    from ibpipeline.assets import flex_assets
    from ibpipeline.assets.marts import dbt_mart_assets
    from ibpipeline.assets.tearsheets import tearsheets
    from ibpipeline.automation.backfill import run_backfill
    from ibpipeline.automation.jobs import flex_daily_job
    from ibpipeline.dbt import dbt_resource
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
            assets=[*flex_assets, *dbt_mart_assets, tearsheets],
            jobs=[flex_daily_job],
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
                "dbt": dbt_resource(),
            },
        )
        began = time.perf_counter()
        result = run_backfill(defs, instance, start, end, marts=args.marts)
        wall = time.perf_counter() - began
        steps = [
            (s.step_key, s.end_time - s.start_time)
            for s in instance.get_run_step_stats(result.run_id)
        ]
        sends = sim.count("SendRequest")
        gets = sim.count("GetStatement")
        files = len(parquet.list_partitions("nav_daily", data_dir=data_dir))
        nav_rows = parquet.read_table("nav_daily", data_dir=data_dir).num_rows
        size = sum(p.stat().st_size for p in (data_dir / "raw").rglob("*.xml"))

    windows = math.ceil(args.days / 365)
    print(f"backfill {args.accounts} accounts x {args.days} days ({start}..{end}), one run")
    print(f"  wall time              {wall:8.1f} s   (target <= {TARGET_SECONDS:.0f} s)")
    for key, seconds in steps:
        print(f"    step {key:<28s} {seconds:8.1f} s")
    print(f"  Flex SendRequest       {sends:8d}     (expected {windows}: one per <= 365 days)")
    print(f"  Flex GetStatement      {gets:8d}     ({size / 1e6:.0f} MB of XML)")
    print(f"  statements parsed      {len(parses):8d}")
    print(f"  nav_daily day files    {files:8d}   rows {nav_rows}")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"  peak RSS               {peak_mib:8.0f} MiB (simulator, Dagster and run in one process)"
    )
    missed = sends != windows or len(parses) != windows
    if args.accounts == 100 and args.days == 365 and not args.marts:
        missed |= wall > TARGET_SECONDS
    shutil.rmtree(tmp, ignore_errors=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
