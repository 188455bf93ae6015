"""Wall time of one gateway snapshot: 100 accounts across 2 simulated IB Gateways (target <= 10 s).

Each simulated gateway runs in its own process, as real gateways do (same seeded world, half of
the accounts each); the collector is the real one (unmodified ib_async, which throttles itself to
45 requests/s per connection). World generation happens before the clock starts, and pyarrow's
one-time pandas import is done up front (a Dagster process has it loaded), so the figure is the
snapshot itself.

    .venv/bin/python bench/gateway_snapshot.py [--accounts 100] [--gateways 2] [--seed 7]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import time
from datetime import UTC, date, datetime
from multiprocessing.connection import Connection

import pyarrow as pa

from ibpipeline.gateway import GatewayAddress, collect_snapshots
from ibpipeline.gateway.schema import PNL_SCHEMA
from ibpipeline.sim.gateway_server import GatewaySimulator
from ibpipeline.world import World

AS_OF = datetime(2024, 6, 28, 20, 0, tzinfo=UTC)  # Friday close, 16:00 US/Eastern (EDT)
INCEPTION = date(2024, 1, 2)
TARGET_SECONDS = 10.0


def serve_gateway(seed: int, n_accounts: int, index: int, gateways: int, pipe: Connection) -> None:
    """Child process: one simulated gateway with every ``gateways``-th account; reports its port
    through ``pipe`` and serves until the parent sends anything."""

    async def serve() -> None:
        world = World(seed=seed, n_accounts=n_accounts, inception=INCEPTION)
        ids = [a.account_id for a in world.accounts][index::gateways]
        async with GatewaySimulator(world, account_ids=ids, clock=AS_OF) as sim:
            pipe.send(sim.port)
            await asyncio.get_running_loop().run_in_executor(None, pipe.recv)

    asyncio.run(serve())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    pa.Table.from_pylist([], schema=PNL_SCHEMA)  # one-time pandas import, outside the timing
    ctx = mp.get_context("spawn")
    started = time.perf_counter()
    pipes, procs = [], []
    for i in range(args.gateways):
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=serve_gateway, args=(args.seed, args.accounts, i, args.gateways, child)
        )
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    try:
        ports = [pipe.recv() for pipe in pipes]
        setup = time.perf_counter() - started
        t0 = time.perf_counter()
        result = collect_snapshots(
            [GatewayAddress("127.0.0.1", port) for port in ports], clock=lambda: AS_OF
        )
        wall = time.perf_counter() - t0
    finally:
        for pipe in pipes:
            pipe.send("stop")
        for proc in procs:
            proc.join(10)

    print(
        f"world + gateways ready: {setup:.1f} s ({args.accounts} accounts, {args.gateways} gateways)"
    )
    print(
        f"snapshot: {len(result.accounts)} accounts, {result.account_values.num_rows} account"
        f" values, {result.positions.num_rows} positions, {result.pnl.num_rows} PnL rows"
    )
    print(f"snapshot wall time: {wall:.2f} s (target <= {TARGET_SECONDS:.0f} s)")
    return 0 if wall <= TARGET_SECONDS and len(result.accounts) == args.accounts else 1


if __name__ == "__main__":
    raise SystemExit(main())
