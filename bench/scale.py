"""Scale benchmark (issue #13): N accounts x D days split into Q Flex queries, run by W Celery
workers against a Postgres Dagster instance and a DuckLake warehouse (catalog in Postgres), and
the same range in one process (SQLite instance, the embedded DuckDB file).

Usage::

    .venv/bin/python bench/scale.py                                   # 1,000 x 365, 10 queries, 2 workers
    .venv/bin/python bench/scale.py --accounts 60 --days 60 --queries 3
    .venv/bin/python bench/scale.py --accounts 60 --days 60 --queries 3 --skip-single

Needs the local RabbitMQ (127.0.0.1:5672, ``rabbitmqctl`` on PATH), Redis (127.0.0.1:6379, the result
backend) and PostgreSQL
(127.0.0.1:5432, trust auth, user postgres). It creates its own vhost, user and database and
removes them afterwards. The Flex simulator runs in its own process with ``--queries Q``, one
token per query (``IBKR_FLEX_QUERIES``); the workers start as deploy/README.md says
(``celery -A ibpipeline.celery_worker worker``); the run is ``dagster job execute`` of
``flex_daily_job`` over the range (raw to marts and tearsheets).

Prints the wall time of both runs, the Flex requests per query (statements stored per query, one
SendRequest each), each worker's peak memory (the Pss of its process tree, sampled every 0.2 s; the sum of RSS
too), the longest
steps, the rows per normalized table and whether the two runs' tables are equal. Exits 1 when a
target is missed: peak memory per worker <= 2 GiB, one request per query per 365 days, results
identical to the single-process run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PEAK_TARGET_MIB = 2048.0
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
LINEAGE = "statement_sha256"  # differs between two fetches of the same days


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def _tree_memory(pid: int) -> dict[str, float]:
    """Memory of ``pid`` and all its descendants (MiB, /proc): ``rss`` (sum of VmRSS), ``pss``
    (sum of Pss) and, per process, ``"<pid> <name>"`` -> its Pss.

    Pss is what the tree occupies: a page shared by N processes counts 1/N in each. RSS counts
    it N times: a Celery worker's pool process is forked from the worker, which imported the
    project (``--include ibpipeline.forkserver_preload``), so the sum of RSS counts those shared
    pages twice.
    """
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children[ppid].append(int(entry.name))
    out, stack = {"rss": 0.0, "pss": 0.0}, [pid]
    while stack:
        p = stack.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text().splitlines()
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        name = next((ln.split()[1] for ln in status if ln.startswith("Name:")), "?")
        for line in status:
            if line.startswith("VmRSS:"):
                out["rss"] += int(line.split()[1]) / 1024
        for line in rollup:
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) / 1024
                out["pss"] += pss
                out[f"{p} {name}"] = pss
        stack.extend(children.get(p, ()))
    return out


class PeakSampler(threading.Thread):
    """Samples the process trees of ``pids`` (name -> pid) every 0.2 s until stopped: each tree's
    peak Pss (``peaks``, MiB), its peak RSS sum (``rss_peaks``), the processes at its Pss peak
    (``at_peak``), and the samples, to tell which step made a peak (``peaks_between``)."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.pids, self.peaks = pids, dict.fromkeys(pids, 0.0)
        self.rss_peaks = dict.fromkeys(pids, 0.0)
        self.at_peak: dict[str, dict[str, float]] = {name: {} for name in pids}
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.2):
            trees = {name: _tree_memory(pid) for name, pid in self.pids.items()}
            self.samples.append((time.time(), {n: t["pss"] for n, t in trees.items()}))
            for name, tree in trees.items():
                self.rss_peaks[name] = max(self.rss_peaks[name], tree["rss"])
                if tree["pss"] > self.peaks[name]:
                    self.peaks[name] = tree["pss"]
                    self.at_peak[name] = {k: v for k, v in tree.items() if k not in ("rss", "pss")}

    def stop(self) -> dict[str, float]:
        self._halt.set()
        self.join()
        return self.peaks

    def peaks_between(self, start: float, end: float) -> dict[str, float]:
        """Each tree's peak Pss between two wall-clock times (epoch seconds)."""
        out = dict.fromkeys(self.pids, 0.0)
        for at, sample in self.samples:
            if start <= at <= end:
                for name, pss in sample.items():
                    out[name] = max(out[name], pss)
        return out


def start_simulator(accounts: int, queries: int, start: date, seed: int, tokens: list[str]):
    """``ibpipeline sim flex --queries Q`` in its own process; returns (process, base URL,
    query ids)."""
    proc = subprocess.Popen(
        [str(BIN / "ibpipeline"), "sim", "flex", "--port", "0", "--token", ",".join(tokens)]
        + ["--query-id", "900100", "--queries", str(queries), "--seed", str(seed)]
        + ["--accounts", str(accounts), "--inception", start.isoformat(), "--no-rate-limits"]
        + ["--account-layout", "blocks"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    ids = []
    for line in proc.stdout:  # one "query <id>: ..." line per query, then the listening line
        if line.startswith("query "):
            ids.append(line.split()[1].rstrip(":"))
        if line.startswith("Flex simulator listening on "):
            base = line.split()[4]
            return proc, base, ids or ["900100"]
    proc.kill()
    raise RuntimeError("the Flex simulator did not start")


def statements_per_query(data_dir: Path, start: date, end: date) -> dict[str, int]:
    """Statements stored per Flex query (one SendRequest each), read from the day manifests."""
    from ibpipeline.storage import rawstore

    seen: dict[str, set[str]] = defaultdict(set)
    day = start
    while day <= end:
        manifest = rawstore.read_manifest(data_dir, day)
        for m in manifest.statements if manifest else ():
            seen[m.query or "default"].add(m.sha256)
        day += timedelta(days=1)
    return {q: len(s) for q, s in sorted(seen.items())}


def table_digests(data_dir: Path) -> dict[str, tuple[int, int]]:
    """(rows, order-independent hash) of every normalized table without ``LINEAGE``."""
    import duckdb

    from ibpipeline.assets import NORMALIZED_TABLES

    out = {}
    with duckdb.connect() as con:
        for name in NORMALIZED_TABLES:
            files = list((data_dir / "normalized" / name).rglob("*.parquet"))
            if not files:
                out[name] = (0, 0)
                continue
            glob = str(data_dir / "normalized" / name / "**" / "*.parquet")
            rel = f"read_parquet('{glob}', hive_partitioning = true, union_by_name = true)"
            cols = [
                c[0]
                for c in con.execute(f"describe select * from {rel}").fetchall()
                if c[0] != LINEAGE
            ]
            sel = ", ".join(f'"{c}"' for c in cols)
            rows, digest = con.execute(
                f"select count(*), coalesce(sum(hash(t)), 0) from (select {sel} from {rel}) t"
            ).fetchone()
            out[name] = (rows, int(digest))
    return out


def warehouse_digests(
    data_dir: Path, lake_catalog: str | None = None
) -> dict[str, tuple[int, int]]:
    """(rows, order-independent hash) of every warehouse table and view (the DuckDB file, or the
    DuckLake of ``lake_catalog``), without ``LINEAGE``; floating columns rounded to 9 decimals
    (sums over rows in another order may differ in the last bits)."""
    from ibpipeline.storage import warehouse

    if lake_catalog is None:
        import duckdb

        con = duckdb.connect(str(data_dir / "ibpipeline.duckdb"), read_only=True)
    else:
        con = warehouse.connect_lake(warehouse.LakeConfig(lake_catalog, data_dir / "lake"), True)
    out = {}
    with con:
        (catalog,) = con.execute("SELECT current_database()").fetchone()
        columns: dict[tuple[str, str], list[str]] = defaultdict(list)
        for schema, table, column, kind in con.execute(
            "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = ? AND table_schema NOT IN ('information_schema', 'pg_catalog') "
            "ORDER BY table_schema, table_name, ordinal_position",
            [catalog],
        ).fetchall():
            if column == LINEAGE:
                continue
            floating = kind in ("DOUBLE", "FLOAT", "REAL")
            columns[(schema, table)].append(f'round("{column}", 9)' if floating else f'"{column}"')
        for (schema, table), cols in sorted(columns.items()):
            rows, digest = con.execute(
                f"SELECT count(*), coalesce(sum(hash(t)), 0) FROM "
                f'(SELECT {", ".join(cols)} FROM "{schema}"."{table}") t'
            ).fetchone()
            out[f"{schema}.{table}"] = (rows, int(digest))
    return out


def step_windows(env: dict[str, str]) -> dict[str, tuple[float, float]]:
    """Step key -> (start, end) epoch seconds in the instance's only run (STEP_START to its
    end)."""
    import dagster as dg

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with dg.DagsterInstance.get() as instance:
            (run,) = instance.get_runs(limit=1)
            starts, out = {}, {}
            for entry in instance.all_logs(run.run_id):
                event = entry.dagster_event
                if event is None or event.step_key is None:
                    continue
                if event.event_type_value == "STEP_START":
                    starts[event.step_key] = entry.timestamp
                elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
                    out[event.step_key] = (
                        starts.get(event.step_key, entry.timestamp),
                        entry.timestamp,
                    )
            return out
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def ingest_selection() -> str:
    """The ``--select`` of raw statements, normalized Flex tables and DuckDB views (what
    ``ibpipeline backfill --no-marts`` runs), as comma-separated asset keys."""
    from ibpipeline.assets import flex_assets

    return ",".join(sorted(k.to_user_string() for a in flex_assets for k in a.keys))


def run_job(env: dict[str, str], start: date, end: date, marts: bool = True) -> tuple[float, str]:
    """One run over the range: ``dagster job execute`` of ``flex_daily_job`` (raw to marts and
    tearsheets), or with ``marts=False`` ``dagster asset materialize`` of its ingestion assets
    (raw, normalized, views); returns (seconds, output tail)."""
    from ibpipeline.automation.ranges import range_tags

    if marts:
        tags = range_tags(start.isoformat(), end.isoformat())
        args = ["job", "execute", "-j", "flex_daily_job", "--tags", json.dumps(tags)]
    else:
        span = f"{start.isoformat()}...{end.isoformat()}"
        args = ["asset", "materialize", "--select", ingest_selection(), "--partition-range", span]
    began = time.monotonic()
    done = subprocess.run(
        [str(BIN / "dagster"), *args, "-m", "ibpipeline.definitions"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.monotonic() - began
    if done.returncode != 0:
        raise RuntimeError(
            f"run failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return elapsed, done.stdout[-500:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2024, 1, 2))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-single", action="store_true", help="no single-process run")
    parser.add_argument(
        "--warehouse",
        choices=("ducklake", "duckdb"),
        default="ducklake",
        help="warehouse of the Celery run (the single-process run uses the embedded DuckDB file)",
    )
    parser.add_argument(
        "--no-marts",
        action="store_true",
        help="stop after the normalized tables and DuckDB views (raw, normalize, write steps)",
    )
    args = parser.parse_args(argv)

    import psycopg2

    from ibpipeline import settings

    start, end = args.start, args.start + timedelta(days=args.days - 1)
    tokens = ["".join(secrets.choice("0123456789") for _ in range(24)) for _ in range(args.queries)]
    tmp = Path(tempfile.mkdtemp(prefix="ibp-scale-"))
    vhost, password = f"ibp_bench_{secrets.token_hex(4)}", secrets.token_hex(12)
    db = f"ibp_bench_{secrets.token_hex(4)}"
    admin = psycopg2.connect(dbname="postgres", **PG)
    admin.autocommit = True
    lake_db = f"{db}_lake" if args.warehouse == "ducklake" else None
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{db}"')
        if lake_db:
            cur.execute(f'CREATE DATABASE "{lake_db}"')
    lake_catalog = (
        f"dbname={lake_db} host={PG['host']} port={PG['port']} user={PG['user']}"
        if lake_db
        else None
    )
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("add_user", vhost, password)
    _rabbitmqctl("set_permissions", "-p", vhost, vhost, ".*", ".*", ".*")
    sim, workers = None, {}
    failures: list[str] = []
    completed = False
    try:
        sim, base_url, query_ids = start_simulator(
            args.accounts, args.queries, start, args.seed, tokens
        )
        spec = ",".join(f"q{i:02d}={q}:IBP_BENCH_TOKEN_{i}" for i, q in enumerate(query_ids))
        home = tmp / "dagster_home"
        home.mkdir()
        shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
        common = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),
            settings.FLEX_BASE_URL_ENV: base_url,
            settings.START_DATE_ENV: start.isoformat(),
            "IBKR_FLEX_QUERIES": spec,
            # dbt in the worker's own process tree, where its memory is measured (a warm dbt
            # server, ibpipeline.dbt_zygote, would run it outside the worker)
            "IBPIPELINE_DBT_ZYGOTE": "0",
            **{f"IBP_BENCH_TOKEN_{i}": t for i, t in enumerate(tokens)},
        }
        celery_env = {
            **common,
            "DAGSTER_HOME": str(home),
            "DAGSTER_PG_USERNAME": "postgres",
            "DAGSTER_PG_PASSWORD": "",
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": "5432",
            "DAGSTER_PG_DB": db,
            settings.EXECUTOR_ENV: "celery",
            settings.CELERY_BROKER_ENV: f"pyamqp://{vhost}:{password}@127.0.0.1:5672/{vhost}",
            # results in Redis (a result over RabbitMQ's 128 MiB message limit would be lost
            # with rpc://); db 0, task ids are unique
            settings.CELERY_BACKEND_ENV: "redis://127.0.0.1:6379/0",
            settings.DATA_DIR_ENV: str(tmp / "data_celery"),
        }
        if lake_catalog:
            celery_env[settings.WAREHOUSE_ENV] = "ducklake"
            celery_env[settings.DUCKLAKE_CATALOG_ENV] = lake_catalog
        for i in range(1, args.workers + 1):
            log = (tmp / f"worker{i}.log").open("wb")
            workers[f"worker{i}"] = subprocess.Popen(
                [str(BIN / "celery"), "-A", "ibpipeline.celery_worker", "worker"]
                + ["-n", f"worker{i}@%h", "-Q", "dagster", "--concurrency", "1"]
                + ["--without-gossip", "--without-mingle", "--loglevel", "INFO"]
                + ["--include", "ibpipeline.forkserver_preload"],
                cwd=ROOT,
                env=celery_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        for name in workers:
            while b" ready." not in (tmp / f"{name}.log").read_bytes():
                if time.monotonic() > deadline or workers[name].poll() is not None:
                    tail = (tmp / f"{name}.log").read_bytes()[-2000:].decode(errors="replace")
                    raise RuntimeError(f"{name} not ready:\n{tail}")
                time.sleep(0.2)
        sampler = PeakSampler({name: p.pid for name, p in workers.items()})
        sampler.start()
        celery_s, _ = run_job(celery_env, start, end, not args.no_marts)
        peaks = sampler.stop()
        celery_windows = step_windows(
            {
                "DAGSTER_HOME": str(home),
                **{k: v for k, v in celery_env.items() if k.startswith("DAGSTER_PG")},
            }
        )
        print(f"{args.accounts} accounts x {args.days} days, {args.queries} queries, "
              f"{args.workers} Celery workers (Postgres instance, warehouse {args.warehouse})")  # fmt: skip
        print(f"  celery run: {celery_s:.1f} s wall")
        for name, peak in peaks.items():
            ok = peak <= PEAK_TARGET_MIB
            failures += [] if ok else [f"{name} peak {peak:.0f} MiB"]
            print(f"  {name}: peak {peak:.0f} MiB Pss (target <= {PEAK_TARGET_MIB:.0f}: "
                  f"{'PASS' if ok else 'FAIL'}); peak sum of RSS {sampler.rss_peaks[name]:.0f} MiB, "
                  "counting pages shared by the worker and its forked pool process twice")  # fmt: skip
            print("    at the peak: " + ", ".join(
                f"{proc} {pss:.0f}" for proc, pss in sorted(sampler.at_peak[name].items())
            ))  # fmt: skip
        per_query = statements_per_query(tmp / "data_celery", start, end)
        windows = -(-args.days // 365)
        ok = len(per_query) == args.queries and all(n == windows for n in per_query.values())
        failures += [] if ok else [f"requests per query {per_query}"]
        print(f"  Flex requests per query: {per_query} (target {windows} each: "
              f"{'PASS' if ok else 'FAIL'})")  # fmt: skip
        celery_steps = {k: end - begin for k, (begin, end) in celery_windows.items()}
        print("  longest steps: " + ", ".join(
            f"{k} {v:.1f} s" for k, v in sorted(celery_steps.items(), key=lambda kv: -kv[1])[:6]
        ))  # fmt: skip
        # each worker runs one step at a time: the tree that peaked in a step's window ran it
        # (or ran a step overlapping it)
        by_peak = sorted(
            ((k, sampler.peaks_between(*w)) for k, w in celery_windows.items()),
            key=lambda kv: -max(kv[1].values(), default=0.0),
        )
        print("  worker peaks in the windows of the steps (MiB):")
        for key, step_peaks in by_peak[:8]:
            listed = ", ".join(f"{n} {v:.0f}" for n, v in step_peaks.items())
            print(f"    {key:<40s} {listed}")
        got = table_digests(tmp / "data_celery")
        got_marts = {} if args.no_marts else warehouse_digests(tmp / "data_celery", lake_catalog)
        if got_marts:
            print(f"  warehouse: {len(got_marts)} tables and views, "
                  f"{sum(n for n, _ in got_marts.values()):,} rows")  # fmt: skip
        print("  rows: " + ", ".join(f"{k} {v[0]}" for k, v in got.items() if v[0]))
        if not args.skip_single:
            single_env = {
                **common,
                "DAGSTER_HOME": str(tmp / "home_single"),
                settings.EXECUTOR_ENV: "in_process",
                settings.DATA_DIR_ENV: str(tmp / "data_single"),
            }
            (tmp / "home_single").mkdir()
            single_s, _ = run_job(single_env, start, end, not args.no_marts)
            expected = table_digests(tmp / "data_single")
            same = got == expected
            failures += [] if same else ["results differ from the single-process run"]
            print(f"  single process (in_process executor, SQLite instance): {single_s:.1f} s wall")
            print(f"  identical normalized tables: {'PASS' if same else 'FAIL'}")
            if not same:
                for k in expected:
                    if got.get(k) != expected[k]:
                        print(f"    {k}: celery {got.get(k)} vs single {expected[k]}")
            if got_marts:
                expected_marts = warehouse_digests(tmp / "data_single")
                same = got_marts == expected_marts
                failures += [] if same else ["warehouse differs from the single-process run"]
                print(f"  identical warehouse tables ({args.warehouse} vs the DuckDB file): "
                      f"{'PASS' if same else 'FAIL'}")  # fmt: skip
                for k in sorted(set(expected_marts) | set(got_marts)):
                    if got_marts.get(k) != expected_marts.get(k):
                        print(f"    {k}: celery {got_marts.get(k)} vs single "
                              f"{expected_marts.get(k)}")  # fmt: skip
        completed = True
    finally:
        for proc in workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
        if sim is not None:
            sim.kill()
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)
        subprocess.run(["rabbitmqctl", "-q", "delete_user", vhost], capture_output=True)
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            if lake_db:
                cur.execute(f'DROP DATABASE IF EXISTS "{lake_db}" WITH (FORCE)')
        admin.close()
        if completed:
            shutil.rmtree(tmp, ignore_errors=True)
        else:  # the workers' logs hold the failed step's error
            print(f"kept {tmp} (worker logs: worker<i>.log)", file=sys.stderr)
    print("targets: " + ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
