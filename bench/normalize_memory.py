"""Peak memory of the normalize step alone (``normalize_days``), per statement size.

Usage::

    .venv/bin/python bench/normalize_memory.py                          # 100 accounts x 120, 365 days
    .venv/bin/python bench/normalize_memory.py --accounts 100 --days 30 --days 365
    .venv/bin/python bench/normalize_memory.py --work /tmp/nm            # where the stores and output go (kept)
    .venv/bin/python bench/normalize_memory.py --compare /tmp/a/data /tmp/b/data

For each size renders one simulated statement (``render_statement(World(seed=7))``, the bytes
the Flex simulator serves for one window) into a raw store (``put_statement`` and the per-day
manifests, as ``raw_flex_statement`` stores a fetch), then runs ``normalize_days`` over every
table and day in a fresh process and prints its wall time, the RSS after imports and the peak RSS
(``VmHWM``). The normalize step of a ``bench/backfill.py`` run does the same inside Dagster.

``--compare A B`` compares two data folders' normalized Parquet files (same file names, same
bytes; else the same rows), e.g. the output of this commit and of another checkout on one store.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

START = date(2024, 1, 2)


def _status(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    return float("nan")


def prepare(root: Path, accounts: int, days: int) -> Path:
    """A data folder holding one statement of ``accounts`` x ``days`` and its manifests."""
    from ibpipeline.flex.ingest import days_in, statement_accounts
    from ibpipeline.sim.flex_statement import render_statement
    from ibpipeline.storage import rawstore
    from ibpipeline.world import World

    data_dir = root / f"{accounts}x{days}" / "data"
    end = START + timedelta(days=days - 1)
    if rawstore.read_manifest(data_dir, end) is not None:
        return data_dir
    world = World(seed=7, n_accounts=accounts, inception=START)
    content = render_statement(world, [a.account_id for a in world.accounts], START, end)
    stored = rawstore.put_statement(data_dir, content)
    manifest = rawstore.Manifest(
        sha256=stored.sha256,
        size=stored.size,
        from_date=START,
        to_date=end,
        accounts=statement_accounts(content),
        fetched_at="2025-01-01T00:00:00+00:00",
    )
    rawstore.write_manifests(data_dir, days_in(START, end), manifest)
    return data_dir


def normalize(data_dir: Path, days: int) -> dict:
    """``normalize_days`` over every table and day of the store (run in a fresh process)."""
    from ibpipeline.assets.normalized import NORMALIZED_TABLES, normalize_days
    from ibpipeline.flex.ingest import days_in

    imported = _status("VmRSS")
    began = time.perf_counter()
    stats = normalize_days(
        data_dir, days_in(START, START + timedelta(days=days - 1)), NORMALIZED_TABLES
    )
    return {
        "wall_s": time.perf_counter() - began,
        "imports_mib": imported,
        "peak_mib": _status("VmHWM"),
        "rows": sum(s.rows for s in stats.values()),
        "files": sum(s.days for s in stats.values()),
    }


def compare(a: Path, b: Path) -> list[str]:
    """Differences between two data folders' normalized files (empty when identical)."""
    import pyarrow.parquet as pq

    def files(root: Path) -> dict[str, Path]:
        base = root / "normalized"
        return {str(p.relative_to(base)): p for p in sorted(base.rglob("*.parquet"))}

    fa, fb = files(a), files(b)
    out = [f"only in {a}: {n}" for n in sorted(fa.keys() - fb.keys())]
    out += [f"only in {b}: {n}" for n in sorted(fb.keys() - fa.keys())]
    same_bytes = 0
    for name in sorted(fa.keys() & fb.keys()):
        if fa[name].read_bytes() == fb[name].read_bytes():
            same_bytes += 1
            continue
        ta, tb = pq.read_table(fa[name]), pq.read_table(fb[name])
        if ta.schema != tb.schema or ta.to_pylist() != tb.to_pylist():
            out.append(f"rows differ: {name}")
        else:
            out.append(f"same rows, other bytes: {name}")
    print(f"{len(fa)} vs {len(fb)} files, {same_bytes} byte-identical")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--days", type=int, action="append")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ibp-normalize-memory"))
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("A", "B"))
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)  # the child: a data folder
    args = parser.parse_args(argv)
    if args.compare:
        diffs = compare(*args.compare)
        print("\n".join(diffs[:50]) or "identical")
        return 1 if diffs else 0
    if args.run:
        print(json.dumps(normalize(args.run, args.days[0])))
        return 0
    print(f"normalize_days, {args.accounts} accounts, one statement, fresh process per size")
    for days in args.days or [120, 365]:
        data_dir = prepare(args.work, args.accounts, days)
        size = sum(p.stat().st_size for p in (data_dir / "raw").rglob("*.xml"))
        child = subprocess.run(
            [sys.executable, __file__, "--run", str(data_dir), "--days", str(days)],
            check=True,
            capture_output=True,
            text=True,
        )
        r = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"  {args.accounts} x {days:3d} days  {size / 1e6:5.0f} MB XML  {r['wall_s']:6.1f} s  "
            f"imports {r['imports_mib']:5.0f} MiB  peak {r['peak_mib']:5.0f} MiB  "
            f"{r['rows']} rows  {r['files']} files"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
