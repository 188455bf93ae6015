"""Backfill benchmark: N accounts x D days through Dagster into the normalized tables.

Usage::

    .venv/bin/python bench/backfill.py                         # 100 accounts x 365 days
    .venv/bin/python bench/backfill.py --accounts 10 --days 90
    .venv/bin/python bench/backfill.py --accounts 10 --days 90 --marts   # + dbt marts
    .venv/bin/python bench/backfill.py --days 1 --marts --keep   # keep the data folder to profile

Starts the real Flex simulator on loopback over a simulated world, then runs exactly what
``ibpipeline backfill --no-marts`` runs (``ibpipeline.automation.backfill.run_backfill``) in a
throwaway SQLite Dagster instance: ONE ``flex_daily_job`` range run (raw statements, normalized
tables, DuckDB views). Prints the wall time, each step's time and resident memory (RSS at its start, its peak
sampled every 0.2 s, at its end), the Flex requests the simulator
logged, how many statements were parsed and how many files were written. Exits 1 when a target
is missed: wall time <= 300 s (default size, without marts), one SendRequest per <= 365-day
window, each statement parsed once.
"""

from __future__ import annotations

import argparse
import contextlib
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
# issue #12's targets, printed with --marts
MARTS_BACKFILL_TARGET_S = 90.0  # 100 x 365, raw to marts and tearsheets, one run
DAILY_RUN_TARGET_S = 10.0  # 100 accounts, one day, raw to marts and tearsheets
PEAK_RSS_TARGET_MIB = 1536.0  # the run's process, the simulator excluded


class RssSampler:
    """Samples this process's resident set size (``VmRSS`` of ``/proc/self/status``, MiB) every
    ``interval`` seconds in a daemon thread, with the wall-clock time of each sample, so each
    Dagster step's peak can be read off its start/end times (``peak_between``)."""

    def __init__(self, interval: float = 0.2) -> None:
        import threading

        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    @staticmethod
    def rss_mib() -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024  # kB
        return float("nan")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self.rss_mib()))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, when: float) -> float:
        """RSS of the last sample taken at or before ``when`` (MiB)."""
        before = [rss for t, rss in self.samples if t <= when]
        return before[-1] if before else (self.samples[0][1] if self.samples else float("nan"))

    def peak_between(self, start: float, end: float) -> float:
        """Highest RSS sampled from ``start`` to ``end`` (epoch seconds), MiB."""
        inside = [rss for t, rss in self.samples if start <= t <= end]
        return max(inside, default=self.at(end))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_simulator(token: str, accounts: int, start: date, seed: int):
    """``ibpipeline sim flex`` in its own process (its memory is not the run's); returns
    (process, base URL) once it answers."""
    import subprocess
    import urllib.request

    port = _free_port()
    exe = Path(sys.executable).with_name("ibpipeline")
    proc = subprocess.Popen(
        [
            str(exe),
            "sim",
            "flex",
            "--port",
            str(port),
            "--token",
            token,
            "--query-id",
            QUERY_ID,
            "--seed",
            str(seed),
            "--accounts",
            str(accounts),
            "--inception",
            start.isoformat(),
            "--no-rate-limits",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/AccountManagement/FlexWebService"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{base}/SendRequest?t=x&q=1&v=3", timeout=1).read()
            return proc, base
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the Flex simulator did not start")


@contextlib.contextmanager
def postgres_instance(home: Path):
    """A Dagster instance configured by deploy/dagster.yaml (Postgres run, event log and schedule
    storage) on a fresh database of the local server, dropped on exit."""
    import dagster as dg
    import psycopg2

    admin = psycopg2.connect(dbname="postgres", host="127.0.0.1", port=5432, user="postgres")
    admin.autocommit = True
    name = f"ibp_bench_{secrets.token_hex(4)}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    env = {
        "DAGSTER_PG_USERNAME": "postgres",
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_DB": name,
    }
    os.environ.update(env)
    shutil.copy(Path(__file__).resolve().parents[1] / "deploy" / "dagster.yaml", home)
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield instance
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2024, 1, 2))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--marts", action="store_true", help="also build the dbt marts")
    parser.add_argument(
        "--history",
        type=int,
        default=0,
        help="first run the HISTORY days before --start (untimed, same data folder), so the timed "
        "run is an incremental one, as a scheduled daily run is (e.g. --start 2024-03-01 --days 1 "
        "--history 30: dbt's saved parse, the marts and tearsheets of earlier days exist)",
    )
    parser.add_argument(
        "--sim-in-process",
        action="store_true",
        help="serve the Flex statements from this process (default: a separate process, so the "
        "peak memory printed is the run's alone)",
    )
    parser.add_argument(
        "--instance",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the Dagster instance's storage: a throwaway SQLite folder (default, as dagster.yaml) "
        "or a fresh database on the local PostgreSQL (127.0.0.1:5432, user postgres), configured "
        "by deploy/dagster.yaml and dropped afterwards",
    )
    parser.add_argument(
        "--event-log",
        choices=("batched", "dagster"),
        default="batched",
        help="the Dagster event log: the project's (dagster.yaml: a range run's materializations "
        "stored in one transaction per output) or Dagster's own SQLite class (default: batched)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary folder (data, Dagster home) and print its path",
    )
    args = parser.parse_args(argv)

    import dagster as dg

    import ibpipeline.assets.normalized as normalized
    from ibpipeline import settings
    from ibpipeline.assets import flex_assets
    from ibpipeline.assets.checks import mart_checks, positions_checks
    from ibpipeline.assets.marts import dbt_mart_assets
    from ibpipeline.assets.tearsheets import tearsheets
    from ibpipeline.automation.backfill import run_backfill
    from ibpipeline.automation.jobs import flex_daily_job
    from ibpipeline.dbt import dbt_resource
    from ibpipeline.flex.ratelimit import RateLimit
    from ibpipeline.instance_storage import enable_event_batches, event_log_storage_config
    from ibpipeline.resources import DataDirResource, FlexResource
    from ibpipeline.sim.flex_server import FlexSimulator, world_statement_source
    from ibpipeline.storage import parquet
    from ibpipeline.world import World

    start = args.start
    first_day = start - timedelta(days=args.history)  # the simulated world's inception
    end = start + timedelta(days=args.days - 1)
    token = "".join(secrets.choice("0123456789") for _ in range(24))
    os.environ[settings.FLEX_TOKEN_ENV] = token
    parses = []  # statements parsed: whole (parse_statement) or in parts (StatementParts)
    real_parse = normalized.parse_statement
    normalized.parse_statement = lambda *a, **k: parses.append(1) or real_parse(*a, **k)

    class CountedParts(normalized.StatementParts):
        def __init__(self, *args, **kwargs) -> None:
            parses.append(1)
            super().__init__(*args, **kwargs)

    normalized.StatementParts = CountedParts

    tmp = Path(tempfile.mkdtemp(prefix="ibp-bench-"))
    (tmp / "home").mkdir()
    if args.sim_in_process:
        world = World(seed=args.seed, n_accounts=args.accounts, inception=first_day)
        simulator = FlexSimulator(
            world_statement_source(world), token, {QUERY_ID}, rate_limits=(RateLimit(1000, 1.0),)
        )
    else:
        simulator = contextlib.nullcontext()
    sim_process = None
    overrides = {}
    if args.event_log == "batched":  # the project's dagster.yaml
        overrides["event_log_storage"] = event_log_storage_config(tmp / "home" / "history" / "runs")
        enable_event_batches()
    else:  # Dagster's own SQLite event log, one event at a time
        os.environ["DAGSTER_EVENT_BATCH_SIZE"] = "0"
    if args.instance == "postgres":  # Dagster's PostgresEventLogStorage batches natively
        if args.event_log == "batched":
            enable_event_batches()
        instance_cm = postgres_instance(tmp / "home")
    else:
        instance_cm = dg.instance_for_test(temp_dir=str(tmp / "home"), overrides=overrides)
    with simulator as sim, instance_cm as instance:
        if sim is None:
            sim_process, base_url = start_simulator(token, args.accounts, first_day, args.seed)
        else:
            base_url = sim.base_url
        data_dir = tmp / "data"
        defs = dg.Definitions(
            assets=[*flex_assets, *dbt_mart_assets, tearsheets],
            asset_checks=[*mart_checks, *positions_checks],
            jobs=[flex_daily_job],
            resources={
                "flex": FlexResource(
                    token=dg.EnvVar(settings.FLEX_TOKEN_ENV),
                    query_id=QUERY_ID,
                    base_url=base_url,
                    first_poll_delay_s=0.0,
                    poll_interval_s=0.05,
                    client_rate_limit=False,
                ),
                "data_dir": DataDirResource(path=str(data_dir)),
                "dbt": dbt_resource(),
            },
        )
        if args.history:
            run_backfill(defs, instance, first_day, start - timedelta(days=1), marts=args.marts)
            parses.clear()
        history_statements = len(list((data_dir / "raw").rglob("*.xml")))
        sends_before = sim.count("SendRequest") if sim is not None else 0
        began = time.perf_counter()
        with RssSampler() as rss:
            result = run_backfill(defs, instance, start, end, marts=args.marts)
        wall = time.perf_counter() - began
        if sim_process is not None:
            sim_process.terminate()
            sim_process.wait()
        steps = [
            (
                s.step_key,
                s.end_time - s.start_time,
                rss.at(s.start_time),
                rss.peak_between(s.start_time, s.end_time),
                rss.at(s.end_time),
            )
            for s in instance.get_run_step_stats(result.run_id)
        ]
        records = instance.get_records_for_run(result.run_id, limit=10_000_000).records
        materializations = sum(
            1
            for r in records
            if r.event_log_entry.dagster_event is not None
            and r.event_log_entry.dagster_event.event_type_value == "ASSET_MATERIALIZATION"
        )
        statements = sorted((data_dir / "raw").rglob("*.xml"))
        sends = (
            sim.count("SendRequest") - sends_before
            if sim is not None
            else len(statements) - history_statements
        )
        files = len(parquet.list_partitions("nav_daily", data_dir=data_dir))
        nav_rows = parquet.read_table("nav_daily", data_dir=data_dir).num_rows
        size = sum(p.stat().st_size for p in statements)

    windows = math.ceil(args.days / 365)
    print(
        f"backfill {args.accounts} accounts x {args.days} days ({start}..{end}), one run, "
        f"{args.instance} instance, event log {args.event_log}"
        + (f", after {args.history} days of history ({first_day}..)" if args.history else "")
    )
    target = TARGET_SECONDS
    if args.marts and args.accounts == 100 and args.days == 365:
        target = MARTS_BACKFILL_TARGET_S
    elif args.marts and args.accounts == 100 and args.days == 1:
        target = DAILY_RUN_TARGET_S
    verdict = "PASS" if wall <= target else "FAIL"
    print(f"  wall time              {wall:8.1f} s   (target <= {target:.0f} s: {verdict})")
    print(f"    {'step':<33s} {'time':>8s}   RSS MiB: {'start':>6s} {'peak':>6s} {'end':>6s}")
    for key, seconds, rss_start, rss_peak, rss_end in steps:
        print(
            f"    step {key:<28s} {seconds:8.1f} s {'':9s}{rss_start:6.0f} {rss_peak:6.0f} "
            f"{rss_end:6.0f}"
        )
    print(f"  materializations       {materializations:8d}     (asset x day, each a Dagster event)")
    print(f"  Flex statements        {sends:8d}     (expected {windows}: one per <= 365 days)")
    print(f"  Flex XML               {size / 1e6:8.0f} MB")
    print(f"  statements parsed      {len(parses):8d}")
    print(f"  nav_daily day files    {files:8d}   rows {nav_rows}")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    who = "simulator, Dagster and run" if sim is not None else "Dagster and run; simulator apart"
    rss_verdict = "PASS" if peak_mib <= PEAK_RSS_TARGET_MIB else "FAIL"
    print(
        f"  peak RSS               {peak_mib:8.0f} MiB ({who}; target <= "
        f"{PEAK_RSS_TARGET_MIB:.0f} MiB: {rss_verdict})"
    )
    missed = sends != windows or len(parses) != windows
    if args.accounts == 100 and args.days in (1, 365):
        missed |= wall > target
    if args.keep:
        print(f"  kept                   {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
