"""``ibpipeline`` command line: simulators, parsing Flex files, and the demo."""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from ibpipeline import settings

DEFAULT_INCEPTION = date(2024, 1, 2)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from exc


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _sim_flex(args: argparse.Namespace) -> int:
    from ibpipeline.sim.flex_server import run_flex_simulator

    raw = args.token or os.environ.get(settings.FLEX_TOKEN_ENV)
    if not raw:
        print(f"error: set {settings.FLEX_TOKEN_ENV} (or pass --token)", file=sys.stderr)
        return 2
    tokens = [t.strip() for t in raw.split(",")]
    if len(tokens) not in (1, args.queries) or not all(tokens):
        print(
            f"error: --queries {args.queries} needs one token (shared) or {args.queries} "
            "comma-separated tokens (one per query)",
            file=sys.stderr,
        )
        return 2
    if args.queries > args.accounts:
        print(
            f"error: --queries {args.queries} exceeds --accounts {args.accounts}", file=sys.stderr
        )
        return 2
    run_flex_simulator(
        args.host,
        args.port,
        tokens[0],
        args.query_id,
        args.seed,
        args.accounts,
        args.inception,
        date_format=args.date_format,
        generation_polls=args.generation_polls,
        quirks=args.quirks,
        fx_commission_in_base=args.fx_commission_in_base,
        rate_limited=not args.no_rate_limits,
        life_events=args.life_events,
        queries=args.queries,
        tokens=tokens,
        layout=args.account_layout,
    )
    return 0


def _sim_gateway(args: argparse.Namespace) -> int:
    from ibpipeline.sim.gateway_server import run_gateway_simulator

    run_gateway_simulator(
        host=args.host,
        port=args.port,
        seed=args.seed,
        accounts=args.accounts,
        inception=args.inception,
        life_events=args.life_events,
    )
    return 0


def _parse(args: argparse.Namespace) -> int:
    from ibpipeline.flex.parse import parse_to_parquet

    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        print(f"error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    result = parse_to_parquet(args.files, args.out)
    print(f"parsed {len(args.files)} file(s) into {args.out}")
    if isinstance(result, dict):
        for table, rows in sorted(result.items()):
            print(f"  {table}: {rows} rows")
    return 0


def _tables(args: argparse.Namespace) -> int:
    from ibpipeline.tables_doc import render_tables_markdown

    sys.stdout.write(render_tables_markdown())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ibpipeline.demo import run_demo

    run_demo(accounts=args.accounts, days=args.days, data_dir=args.data_dir, seed=args.seed)
    return 0


WARNINGS_SHOWN = 5
"""Warning lines printed per imported file (all of them are in the file's ledger entry)."""


def _import(args: argparse.Namespace) -> int:
    from ibpipeline.inbox import import_statement

    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        print(f"error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    rejected = 0
    ingested = []
    for path in args.files:
        result = import_statement(args.data_dir, path)
        rejected += result.status == "rejected"
        print(result.summary(), file=sys.stderr if result.status == "rejected" else sys.stdout)
        for line in result.warnings[:WARNINGS_SHOWN]:
            print(f"  warning: {line}", file=sys.stderr)
        if len(result.warnings) > WARNINGS_SHOWN:
            print(
                f"  ... {len(result.warnings) - WARNINGS_SHOWN} more warning(s) in "
                f"{args.data_dir}/raw/inbox/{result.sha256}.json",
                file=sys.stderr,
            )
        if result.status == "ingested" and result.days_claimed:
            ingested.append(result)
    if ingested and not args.no_marts:
        _import_marts(args.data_dir, ingested)
    return 1 if rejected else 0


def _import_marts(data_dir: Path, results: list) -> None:
    """Record each imported file's ``parse_warnings`` checks in the local Dagster instance, then
    one ``marts_job`` run over the days the imported files stored."""
    os.environ[settings.DATA_DIR_ENV] = str(Path(data_dir).resolve())  # before defs are built
    from ibpipeline.automation.backfill import run_marts
    from ibpipeline.automation.jobs import parse_check_evaluations
    from ibpipeline.definitions import build_defs
    from ibpipeline.demo import demo_instance
    from ibpipeline.partitions import register_accounts

    days = sorted(d for r in results for d in r.days_claimed)
    with demo_instance(Path.cwd()) as instance:
        register_accounts(instance, sorted({a for r in results for a in r.accounts}))
        for result in results:
            for evaluation in parse_check_evaluations(result):
                instance.report_runless_asset_event(evaluation)
        run_id = run_marts(build_defs(), instance, days[0], days[-1])
    print(f"marts rebuilt for {days[0]}..{days[-1]} in run {run_id}")


def _backfill(args: argparse.Namespace) -> int:
    from ibpipeline.automation.backfill import last_backfill_day, run_backfill
    from ibpipeline.definitions import build_defs
    from ibpipeline.demo import demo_instance
    from ibpipeline.flex.queries import missing_tokens

    queries = settings.flex_queries()  # FlexQueriesConfigError names a malformed entry
    if not os.environ.get(settings.FLEX_QUERIES_ENV) and (
        not os.environ.get(settings.FLEX_TOKEN_ENV) or not settings.flex_query_id()
    ):
        print(
            f"error: set {settings.FLEX_TOKEN_ENV} and {settings.FLEX_QUERY_ID_ENV} "
            f"(or {settings.FLEX_QUERIES_ENV})",
            file=sys.stderr,
        )
        return 2
    missing = missing_tokens(queries)
    if missing:
        print("error: " + "; ".join(missing), file=sys.stderr)
        return 2
    last = last_backfill_day()
    if args.start > last:
        print(
            f"error: --start {args.start} is after {last}, the last report day IBKR can have "
            f"published (a day is ready after its close of business, {settings.schedule_timezone()}"
            "); nothing was requested",
            file=sys.stderr,
        )
        return 2
    end = min(args.end, last)
    if end < args.end:
        print(
            f"note: --end {args.end} clamped to {end}, the last report day IBKR can have published",
            file=sys.stderr,
        )
    with demo_instance(Path.cwd()) as instance:
        result = run_backfill(build_defs(), instance, args.start, end, marts=not args.no_marts)
    print(
        f"backfilled {args.start}..{end} in run {result.run_id}: "
        f"{len(result.accounts)} accounts registered"
    )
    return 0


class _HELP(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, unless its help already says it or it is a flag."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


HOST_HELP = "IP address to listen on, e.g. 127.0.0.1 (loopback only) or 0.0.0.0 (every interface)"
DEBUG_HELP = "show the full traceback of an error (default: one line)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ibpipeline``."""
    parser = argparse.ArgumentParser(prog="ibpipeline", description=__doc__, formatter_class=_HELP)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    debug = argparse.ArgumentParser(add_help=False)  # --debug also after any subcommand
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    sub = {"formatter_class": _HELP, "parents": [debug]}
    commands = parser.add_subparsers(dest="command", required=True)

    sim = commands.add_parser("sim", **sub, help="run a local simulator of an IBKR service")
    sims = sim.add_subparsers(dest="simulator", required=True)

    flex = sims.add_parser("flex", **sub, help="Flex Web Service simulator (HTTP)")
    flex.add_argument("--host", default="127.0.0.1", help=HOST_HELP)
    flex.add_argument("--port", type=int, default=8765, help="TCP port")
    flex.add_argument(
        "--token",
        help=f"token clients must send (default: ${settings.FLEX_TOKEN_ENV}); with --queries N, "
        "one token shared by every query or N comma-separated tokens, one per query",
    )
    flex.add_argument(
        "--query-id",
        default="123456",
        help="Flex query id clients must send (with --queries N: the first of N consecutive ids)",
    )
    flex.add_argument(
        "--queries",
        type=_positive,
        default=1,
        help="serve this many queries over disjoint accounts of the world (one line per query "
        "printed at start: id, token number, accounts)",
    )
    flex.add_argument(
        "--account-layout",
        choices=("round_robin", "blocks"),
        default="round_robin",
        help="how --queries splits the accounts: account i to query i mod N, or contiguous blocks",
    )
    flex.add_argument("--seed", type=int, default=7, help="seed of the simulated world")
    flex.add_argument("--accounts", type=_positive, default=4, help="number of simulated accounts")
    flex.add_argument(
        "--inception",
        type=_date,
        default=DEFAULT_INCEPTION,
        help="first day of the world, YYYY-MM-DD",
    )
    flex.add_argument(
        "--date-format",
        default="yyyyMMdd",
        help="Flex date format of the statements, e.g. yyyy-MM-dd",
    )
    flex.add_argument(
        "--quirks",
        default="",
        help="real-statement quirks, comma-separated, e.g. sub_accounts=OPT+FUT,"
        "omit=OpenPositions,separator=comma,time=HHmmss,zone,fx_net_cash_zero,count=1 "
        "(default: none, a clean statement)",
    )
    flex.add_argument(
        "--fx-commission-in-base",
        action="store_true",
        help="FX conversions pay their commission in the base currency (as IBKR does)",
    )
    flex.add_argument(
        "--generation-polls",
        type=int,
        default=1,
        help="GetStatement polls answered 1019 (generation in progress) before each statement",
    )
    flex.add_argument(
        "--no-rate-limits",
        action="store_true",
        help="answer every request (no 1018 for more than 1 request/s or 10/min; benchmarks)",
    )
    flex.add_argument(
        "--life-events",
        action="store_true",
        help="every account also lives through an ACATS transfer in and out, splits, an ISIN "
        "change, option expiry/assignment/exercise, a cash-and-stock merger and a spin-off "
        "in its first 18 business days",
    )
    flex.set_defaults(func=_sim_flex)

    gateway = sims.add_parser("gateway", **sub, help="IB Gateway simulator (TWS socket protocol)")
    gateway.add_argument("--host", default="127.0.0.1", help=HOST_HELP)
    gateway.add_argument("--port", type=int, default=4002, help="TCP port (IB Gateway paper: 4002)")
    gateway.add_argument("--seed", type=int, default=7, help="seed of the simulated world")
    gateway.add_argument(
        "--accounts", type=_positive, default=4, help="number of simulated accounts"
    )
    gateway.add_argument(
        "--inception",
        type=_date,
        default=DEFAULT_INCEPTION,
        help="first day of the world, YYYY-MM-DD",
    )
    gateway.add_argument(
        "--life-events",
        action="store_true",
        help="every account also lives through an ACATS transfer in and out, splits, an ISIN "
        "change, option expiry/assignment/exercise, a cash-and-stock merger and a spin-off "
        "in its first 18 business days",
    )
    gateway.set_defaults(func=_sim_gateway)

    parse = commands.add_parser("parse", **sub, help="parse Flex XML files into normalized Parquet")
    parse.add_argument(
        "files", nargs="+", type=Path, metavar="FILE", help="Activity Flex XML files"
    )
    parse.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="output folder (required): DIR/<table>/<file>.parquet",
    )
    parse.set_defaults(func=_parse)

    imp = commands.add_parser(
        "import",
        **sub,
        help="ingest hand-downloaded Flex XML files (raw store + normalized Parquet); the files "
        "are left in place",
    )
    imp.add_argument("files", nargs="+", type=Path, metavar="FILE", help="Activity Flex XML files")
    imp.add_argument(
        "--data-dir",
        type=Path,
        default=settings.data_dir(),
        metavar="DIR",
        help=f"data folder (default: ${settings.DATA_DIR_ENV} or ./data)",
    )
    imp.add_argument(
        "--no-marts",
        action="store_true",
        help="store raw + normalized only; do not rebuild the dbt marts for the imported days "
        "(default: record each file's parse_warnings checks in the local Dagster instance and "
        "rebuild the marts in one marts_job run of it)",
    )
    imp.set_defaults(func=_import)

    backfill = commands.add_parser(
        "backfill",
        **sub,
        help="one flex_daily_job run over a date range in the local Dagster instance: fetch it "
        "(one Flex request per query and 365 days), normalize every account, rebuild the marts",
    )
    backfill.add_argument(
        "--start", type=_date, required=True, help="first report date, YYYY-MM-DD (required)"
    )
    backfill.add_argument(
        "--end",
        type=_date,
        required=True,
        help="last report date, YYYY-MM-DD (required; a later date than yesterday in "
        "$IBPIPELINE_SCHEDULE_TIMEZONE is clamped to it: IBKR publishes a day after its close)",
    )
    backfill.add_argument(
        "--no-marts", action="store_true", help="stop after the normalized tables and views"
    )
    backfill.set_defaults(func=_backfill)

    tables = commands.add_parser(
        "tables",
        **sub,
        help="print every table's columns, types and units (docs/tables.md)",
    )
    tables.set_defaults(func=_tables)

    demo = commands.add_parser(
        "demo",
        **sub,
        help="simulated Flex -> raw -> normalized -> DuckDB in the local Dagster instance",
    )
    demo.add_argument("--accounts", type=_positive, default=3, help="simulated accounts")
    demo.add_argument("--days", type=_positive, default=60, help="calendar days ending yesterday")
    demo.add_argument(
        "--data-dir", type=Path, default=Path(settings.DEFAULT_DATA_DIR), help="data folder"
    )
    demo.add_argument("--seed", type=int, default=7, help="seed of the simulated world")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ibpipeline`` console script; returns the exit status."""
    # Dagster's BetaWarning/PreviewWarning on every import of the definitions is noise for CLI users
    warnings.filterwarnings("ignore", message=r".*is currently in (beta|preview)")
    load_project_env(Path.cwd())
    args = build_parser().parse_args(argv)
    if args.debug:
        return args.func(args)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line; --debug shows the traceback
        print(f"error: {_one_line(exc)} (run with --debug for the traceback)", file=sys.stderr)
        return 1


def load_project_env(project_dir: Path) -> None:
    """Read ``project_dir/.env`` as ``dagster dev`` does (variables already set win)."""
    from dotenv import load_dotenv

    if (project_dir / ".env").is_file():
        load_dotenv(project_dir / ".env", override=False)


def _one_line(exc: BaseException) -> str:
    """The innermost user-facing error of ``exc`` (Dagster wraps step errors) as one line."""
    while getattr(exc, "user_exception", None) is not None:
        exc = exc.user_exception
    text = " ".join(str(exc).split()) or type(exc).__name__
    # dagster-dbt puts dbt's own error lines after a long preamble: show them first
    head, marker, dbt_errors = text.partition("Errors parsed from dbt logs:")
    if marker:
        code = re.search(r"exit code `(\d+)`", head)
        text = f"dbt failed (exit {code.group(1) if code else '?'}): {dbt_errors.strip()}"
    return text if len(text) <= 400 else text[:397] + "..."


if __name__ == "__main__":
    sys.exit(main())
