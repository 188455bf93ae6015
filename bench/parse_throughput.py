"""Flex parser throughput: ibpipeline.flex.parse vs ibflex 1.1 vs a bare ``lxml.etree.fromstring``.

Usage::

    .venv/bin/python bench/parse_throughput.py                 # simulated 4 accounts x 1 year
    .venv/bin/python bench/parse_throughput.py --days 90 --accounts 2 --repeat 5
    .venv/bin/python bench/parse_throughput.py --file some_statement.xml

Each contender runs in its own subprocess, so its peak memory (``ru_maxrss`` growth over the
process's RSS before parsing; the input bytes are already loaded) is its own. Time is the best of
``--repeat`` runs (CPU time of the process, which is steadier than wall time on a shared machine);
MB/s = input size / that time. Targets (issue #12): >= 8x ibflex, >= 60 % of the bare lxml throughput.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FULL_YEAR = (
    REPO / ".." / "shared" / "fixtures" / "flex" / "public" / "opensteuerauszug_full_year_2025.xml"
)
TARGET_VS_IBFLEX = 8.0
TARGET_VS_LXML = 0.6


def _rss_kib() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() // 1024


def _contender(name: str):
    if name == "ibpipeline":
        from ibpipeline.flex.parse import parse_statement

        return parse_statement
    if name == "ibflex":
        warnings.simplefilter("ignore")
        from ibflex import parser

        return parser.parse
    from lxml import etree

    return lambda data: etree.fromstring(data, etree.XMLParser(huge_tree=True))


def worker(name: str, path: Path, repeat: int) -> dict:
    """Run one contender ``repeat`` times on ``path``; return best CPU seconds and peak RSS growth."""
    parse = _contender(name)
    data = path.read_bytes()
    before = _rss_kib()
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        result = parse(data)
        best = min(best, time.process_time() - start)
        del result
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": best, "peak_mib": max(peak - before, 0) / 1024}


def generate(accounts: int, days: int, out: Path) -> str:
    """Write a simulated statement (or replicated fixture statements) to ``out``; describe it."""
    try:
        from ibpipeline.sim.flex_statement import render_statement
        from ibpipeline.world import World
    except ImportError:
        return _replicate_fixture(accounts * max(days // 30, 1), out)
    start = date(2024, 1, 2)
    world = World(seed=7, n_accounts=accounts, inception=start)
    ids = [a.account_id for a in world.accounts]
    out.write_bytes(render_statement(world, ids, start, start + timedelta(days=days - 1)))
    return f"simulated World(seed=7): {len(ids)} accounts x {days} days"


def _replicate_fixture(copies: int, out: Path) -> str:
    text = FULL_YEAR.read_text()
    head, rest = text.split("<FlexStatement ", 1)
    body, tail = rest.rsplit("</FlexStatement>", 1)
    statement = "<FlexStatement " + body + "</FlexStatement>\n"
    head = head.replace('count="1"', f'count="{copies}"')
    out.write_text(head + statement * copies + tail.lstrip("\n"))
    return f"full-year public fixture statement x {copies}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--accounts", type=int, default=4)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--file", type=Path, help="benchmark this statement instead of generating one")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--worker", nargs=2, metavar=("NAME", "FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], Path(args.worker[1]), args.repeat)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = args.file
        what = f"file {path}"
        if path is None:
            path = Path(tmp) / "statement.xml"
            what = generate(args.accounts, args.days, path)
        size_mb = path.stat().st_size / 1e6
        print(f"input: {what}; {size_mb:.1f} MB")
        results = {}
        for name in ("lxml.fromstring", "ibpipeline", "ibflex"):
            repeat = 1 if name == "ibflex" else args.repeat
            cmd = [sys.executable, __file__, "--repeat", str(repeat), "--worker", name, str(path)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
            r = results[name]
            print(
                f"{name:16s} {size_mb / r['seconds']:8.1f} MB/s  {r['seconds'] * 1000:9.1f} ms"
                f"  peak +{r['peak_mib']:7.1f} MiB"
            )
    ours = results["ibpipeline"]["seconds"]
    vs_ibflex = results["ibflex"]["seconds"] / ours
    vs_lxml = results["lxml.fromstring"]["seconds"] / ours
    print(f"speed-up over ibflex: {vs_ibflex:.1f}x (target >= {TARGET_VS_IBFLEX:g}x)")
    print(f"throughput vs bare lxml: {vs_lxml:.0%} (target >= {TARGET_VS_LXML:.0%})")
    return 0 if vs_ibflex >= TARGET_VS_IBFLEX and vs_lxml >= TARGET_VS_LXML else 1


if __name__ == "__main__":
    sys.exit(main())
