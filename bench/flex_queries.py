"""Several Flex queries: peak memory of normalizing a range, one query vs N queries.

Usage::

    .venv/bin/python bench/flex_queries.py                        # 30 accounts x 120 days, 3 queries
    .venv/bin/python bench/flex_queries.py --accounts 60 --days 365 --queries 4

Starts ``ibpipeline sim flex`` twice on loopback over the same world: once with one query over
every account, once with ``--queries N`` over disjoint accounts. Fetches and stores the range
from each (``FlexClient`` + ``ibpipeline.flex.ingest.store_window``, as the per-query steps of
``raw_flex_statement`` do), then normalizes it (``normalize_days``, as ``normalized_flex`` does)
in a fresh process per case, and prints each case's wall time and peak RSS (one query; N
queries). ``normalize_days`` parses one statement at a time and keeps only its rows of the range,
so the peak follows the largest statement. Checks that both cases write the same rows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

FIRST_QUERY_ID = "900100"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_simulator(args: argparse.Namespace, tokens: list[str], queries: int):
    """``ibpipeline sim flex --queries N`` in its own process; returns (process, base URL)."""
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
            ",".join(tokens),
            "--query-id",
            FIRST_QUERY_ID,
            "--queries",
            str(queries),
            "--seed",
            str(args.seed),
            "--accounts",
            str(args.accounts),
            "--inception",
            args.start.isoformat(),
            "--generation-polls",
            "0",
            "--no-rate-limits",
        ],  # fmt: skip
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


def fetch(args: argparse.Namespace, data_dir: Path, queries: int) -> int:
    """Fetch and store the range of every query; returns the statements' total bytes."""
    from ibpipeline.flex.client import FlexClient, split_range
    from ibpipeline.flex.ingest import statement_accounts, store_window

    tokens = ["".join(secrets.choice("0123456789") for _ in range(24)) for _ in range(queries)]
    proc, base = start_simulator(args, tokens, queries)
    end = args.start + timedelta(days=args.days - 1)
    size = 0
    try:
        for i, token in enumerate(tokens):
            query_id = str(int(FIRST_QUERY_ID) + i)
            with FlexClient(token, base_url=base, first_poll_delay=0, limiter=None) as client:
                for fd, td in split_range(args.start, end):
                    result = client.fetch(query_id, fd, td)
                    accounts = statement_accounts(result.content)
                    name = f"q{i + 1}" if queries > 1 else None
                    store_window(data_dir, result, fd, td, accounts, query=name)
                    size += len(result.content)
    finally:
        proc.terminate()
        proc.wait()
    return size


def peak_rss_mib() -> float:
    """This process's peak resident set (``VmHWM``: unlike ``ru_maxrss``, not inherited from the
    parent across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def normalize(data_dir: Path, start: date, days: int) -> dict:
    """``normalize_days`` over the range in this process: wall time, peak RSS, rows."""
    import ibpipeline.assets.normalized as normalized

    baseline = peak_rss_mib()
    began = time.perf_counter()
    stats = normalized.normalize_days(
        data_dir,
        [start + timedelta(days=i) for i in range(days)],
        normalized.NORMALIZED_TABLES,
    )
    return {
        "wall_s": time.perf_counter() - began,
        "peak_mib": peak_rss_mib(),
        "baseline_mib": baseline,
        "rows": {name: s.rows for name, s in stats.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=30)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--queries", type=int, default=3)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2024, 1, 2))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--normalize", type=Path, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args(argv)
    if args.normalize is not None:
        print(json.dumps(normalize(args.normalize, args.start, args.days)))
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="ibp-bench-queries-"))
    try:
        single, split = tmp / "single", tmp / "split"
        sizes = {"single": fetch(args, single, 1), "split": fetch(args, split, args.queries)}
        cases = [("1 query", single), (f"{args.queries} queries", split)]
        print(
            f"normalize {args.accounts} accounts x {args.days} days from {args.start}: Flex XML "
            f"{sizes['single'] / 1e6:.0f} MB in 1 statement, {sizes['split'] / 1e6:.0f} MB in "
            f"{args.queries}"
        )
        rows = []
        for label, folder in cases:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--normalize",
                    str(folder),
                    "--start",
                    args.start.isoformat(),
                    "--days",
                    str(args.days),
                ],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(result["rows"])
            print(
                f"  {label:<28s} wall {result['wall_s']:7.1f} s   peak RSS "
                f"{result['peak_mib']:7.0f} MiB (imports {result['baseline_mib']:.0f})   rows "
                f"{sum(result['rows'].values())}"
            )
        same = all(r == rows[0] for r in rows)
        print(f"  same rows per table in every case: {same}")
        return 0 if same else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
