import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from ibpipeline.assets import NORMALIZED_TABLES
from ibpipeline.cli import build_parser, main
from ibpipeline.demo import report, run_demo
from ibpipeline.flex.parse import FlexParseError
from tests.fixture_files import PUBLIC_FLEX_DIR

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = PUBLIC_FLEX_DIR


def test_parse_writes_tables(tmp_path, capsys):
    files = [PUBLIC / "pp_file26_two_accounts.xml", PUBLIC / "pp_file17_one_day_many_sections.xml"]
    assert main(["parse", *map(str, files), "--out", str(tmp_path / "out")]) == 0
    info = pq.read_table(tmp_path / "out" / "account_info")
    assert set(info.column("account_id").to_pylist()) == {"U1234567", "U1234568", "U1111111"}
    assert f"account_info: {info.num_rows} rows" in capsys.readouterr().out


def test_parse_missing_file(tmp_path, capsys):
    assert main(["parse", str(tmp_path / "nope.xml"), "--out", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err


HTML_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Login</title></head><body><p>Sign in<br></body></html>\n"
)


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("statement.csv", "ClientAccountID,TradeDate\nU1234567,20240102\n", "invalid or truncated"),
        ("statement.html", HTML_PAGE, "root element is <html>"),
        ("empty.xml", "", "empty input: 0 bytes"),
    ],
)
def test_parse_of_a_file_that_is_no_flex_xml_is_one_clear_line(
    tmp_path, capsys, name, text, reason
):
    path = tmp_path / name
    path.write_text(text)
    assert main(["parse", str(path), "--out", str(tmp_path / "out")]) == 1
    printed = capsys.readouterr()
    assert printed.out == ""
    (line,) = printed.err.splitlines()
    assert line.startswith("error: ") and reason in line, line
    assert line.endswith("(run with --debug for the traceback)")
    assert not (tmp_path / "out").exists()


def test_debug_raises_the_error_before_or_after_the_subcommand(tmp_path):
    page = tmp_path / "statement.html"
    page.write_text(HTML_PAGE)
    args = ["parse", str(page), "--out", str(tmp_path / "out")]
    assert build_parser().parse_args(args).debug is False
    for argv in (["--debug", *args], [*args, "--debug"]):
        assert build_parser().parse_args(argv).debug is True
        with pytest.raises(FlexParseError, match="root element is <html>"):
            main(argv)


def run_console_script(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``ibpipeline *args`` as a user runs it (this checkout's code, ``env`` added)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("IBKR_", "IBPIPELINE_"))}
    return subprocess.run(
        [str(Path(sys.executable).with_name("ibpipeline")), *args],
        cwd=cwd,
        env={**environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_debug_prints_the_traceback(tmp_path):
    page = tmp_path / "statement.html"
    page.write_text(HTML_PAGE)
    done = run_console_script(tmp_path, "parse", str(page), "--out", "out", "--debug")
    assert done.returncode == 1
    assert done.stderr.startswith("Traceback (most recent call last):"), done.stderr
    assert "FlexParseError: root element is <html>" in done.stderr


def test_cli_calls_print_no_dagster_warning(tmp_path):
    """Neither ``--help`` nor a command loading the definitions prints Dagster's Beta/Preview
    warnings (``backfill`` imports them, then refuses a start with no statement yet)."""
    assert run_console_script(tmp_path, "--help").stderr == ""
    tomorrow = (date.today() + timedelta(days=1)).isoformat()
    refused = run_console_script(
        tmp_path,
        "backfill",
        "--start",
        tomorrow,
        "--end",
        tomorrow,
        IBKR_FLEX_TOKEN="402918375561029384756102",
        IBKR_FLEX_QUERY_ID="800969",
    )
    assert refused.returncode == 2
    assert "Warning" not in refused.stderr
    (line,) = refused.stderr.splitlines()
    assert line.startswith(f"error: --start {tomorrow} is after "), refused.stderr


def test_sim_flex_requires_a_token(monkeypatch, capsys):
    monkeypatch.delenv("IBKR_FLEX_TOKEN", raising=False)
    assert main(["sim", "flex", "--port", "0"]) == 2
    assert "IBKR_FLEX_TOKEN" in capsys.readouterr().err


def test_sim_flex_checks_the_queries_tokens_and_accounts(monkeypatch, capsys):
    monkeypatch.delenv("IBKR_FLEX_TOKEN", raising=False)
    assert main(["sim", "flex", "--port", "0", "--queries", "3", "--token", "a,b"]) == 2
    assert "one token (shared) or 3 comma-separated tokens" in capsys.readouterr().err
    assert main(["sim", "flex", "--port", "0", "--queries", "5", "--token", "a"]) == 2
    assert "--queries 5 exceeds --accounts 4" in capsys.readouterr().err


def test_backfill_names_the_query_whose_token_variable_is_unset(monkeypatch, capsys):
    monkeypatch.setenv("IBKR_FLEX_QUERIES", "east=1:TEST_TOKEN_EAST,west=2:TEST_TOKEN_WEST")
    monkeypatch.setenv("TEST_TOKEN_EAST", "731054826619374025548312")
    monkeypatch.delenv("TEST_TOKEN_WEST", raising=False)
    assert main(["backfill", "--start", "2024-01-02", "--end", "2024-01-03"]) == 2
    err = capsys.readouterr().err
    assert "query west (id 2): token variable TEST_TOKEN_WEST is not set" in err
    assert "731054826619374025548312" not in err


def test_argument_validation():
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--accounts", "0"])
    with pytest.raises(SystemExit):
        parser.parse_args(["sim", "gateway", "--inception", "01/02/2024"])
    args = parser.parse_args(["demo"])
    assert (args.accounts, args.days, str(args.data_dir)) == (3, 60, "data")


def test_console_script_help():
    script = Path(sys.executable).with_name("ibpipeline")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for command in ("sim", "parse", "demo"):
        assert command in done.stdout


@pytest.mark.slow
def test_demo_twice_gives_the_same_rows(monkeypatch):
    shm = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else None
    project = Path(tempfile.mkdtemp(dir=shm, prefix="ibpipeline-demo-"))
    try:
        (project / "dagster.yaml").write_bytes((ROOT / "dagster.yaml").read_bytes())
        monkeypatch.chdir(project)
        monkeypatch.delenv("DAGSTER_HOME", raising=False)
        monkeypatch.setenv("IBKR_FLEX_TOKEN", "unused")  # restored after the test
        today = date(2024, 3, 13)
        kwargs = dict(
            accounts=2,
            days=5,
            data_dir=project / "data",
            project_dir=project,
            today=today,
            quiet=True,
        )
        first = run_demo(**kwargs)
        token = os.environ["IBKR_FLEX_TOKEN"]
        assert token != "unused" and len(token) == 24
        files = sorted(
            p.relative_to(project) for p in (project / "data" / "normalized").rglob("*.parquet")
        )
        second = run_demo(**kwargs)
        assert (first.start, first.end) == (date(2024, 3, 8), date(2024, 3, 12))
        assert second.row_counts == first.row_counts
        assert first.row_counts["nav_daily"] == 2 * 3  # 2 accounts x Fri, Mon, Tue
        assert second.last_nav == first.last_nav
        assert {day for day, _, _ in first.last_nav.values()} == {date(2024, 3, 12)}
        assert (
            sorted(
                p.relative_to(project) for p in (project / "data" / "normalized").rglob("*.parquet")
            )
            == files
        )
        flex_files = [f for f in files if not f.parts[2].startswith("gateway_")]
        assert len(flex_files) == 5 * len(NORMALIZED_TABLES)  # one file per table and day
        gateway_files = [f for f in files if f.parts[2].startswith("gateway_")]
        assert len(gateway_files) == 2 * 3  # 2 accounts x 3 gateway tables on the last close
        assert all("date=2024-03-12" in str(f) for f in gateway_files)
        assert first.gateway_check.startswith("passed: 2 account-days within")
        with dg.DagsterInstance.from_config(str(project)) as instance:
            runs = instance.get_runs()
        flex_runs = sorted(r.job_name for r in runs if not r.job_name.startswith("__"))
        assert flex_runs == ["flex_daily_job"] * 2
        assert (
            len(runs) == 2 + 2 * 3
        )  # plus snapshot, gateway tables and gateway views runs each time
        assert all(r.is_success for r in runs)
        leaks = [p for p in project.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
        assert leaks == []
        assert token not in report(second, project)
    finally:
        shutil.rmtree(project, ignore_errors=True)


@pytest.mark.parametrize("project", ["checkout", "folder with space"])
def test_the_demos_last_line_works_without_an_activated_venv(tmp_path, project):
    """The demo ends with ``cd <project> && <dagster> dev ...``: the venv's own ``dagster`` by a
    path that exists (``.venv/bin/dagster`` in the checkout), run here with no venv on PATH."""
    from ibpipeline.demo import DemoResult

    project_dir = ROOT if project == "checkout" else tmp_path / project
    project_dir.mkdir(exist_ok=True)
    result = DemoResult(date(2024, 3, 8), date(2024, 3, 12), ("U1",), {}, {}, project_dir / "data")
    last = report(result, project_dir).splitlines()[-1]
    assert last.startswith(f"cd {shlex.quote(str(project_dir))} && "), last
    words = shlex.split(last.partition(" && ")[2])
    assert words[1:] == ["dev", "-w", "workspace.yaml"]
    dagster = project_dir / words[0]  # relative to the project, or absolute
    assert dagster.is_file() and os.access(dagster, os.X_OK), last
    if project == "checkout":
        assert words[0] == ".venv/bin/dagster"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        ["/bin/sh", "-c", f"{last} --help"],
        cwd=elsewhere,
        env={**os.environ, "PATH": "/usr/bin:/bin", "VIRTUAL_ENV": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "dagster dev" in done.stdout


def test_docs_tables_is_generated_from_the_schemas(capsys):
    assert main(["tables"]) == 0
    printed = capsys.readouterr().out
    assert (
        "| commission | decimal128(38, 10) | money in commission_currency | `ibCommission` |"
        in printed
    )
    assert printed == (ROOT / "docs" / "tables.md").read_text(), (
        "run: ibpipeline tables > docs/tables.md"
    )


def test_every_option_of_every_command_has_help_text() -> None:
    """``--help`` describes every option; an option taking a value names its default or says it
    is required, and dates and addresses give their format."""
    import argparse

    from ibpipeline.cli import _date, build_parser

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    problems, options = [], 0
    for parser in parsers(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            name = f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
            if not action.help:
                problems.append(f"{name}: no help")
                continue
            shown = formatter._expand_help(action)  # as --help prints it
            if re.search(r"\(default: (None)?\)", shown):
                problems.append(f"{name}: empty default in {shown!r}")
            if action.option_strings and action.nargs != 0:
                options += 1
                if action.required and "required" not in shown:
                    problems.append(f"{name}: required, but its help does not say so")
                if not action.required and not re.search(r"\(default: [^)\s]", shown):
                    problems.append(f"{name}: no default in {shown!r}")
            if action.type is _date and "YYYY-MM-DD" not in action.help:
                problems.append(f"{name}: no date format")
            if action.dest == "host" and not re.search(r"e\.g\. \d+\.\d+\.\d+\.\d+", action.help):
                problems.append(f"{name}: no address format")
    assert problems == []
    assert options > 20


def test_commands_read_the_project_env_file(tmp_path, monkeypatch) -> None:
    """``.env`` in the working folder is read as ``dagster dev`` reads it (set variables win)."""
    from ibpipeline.cli import main

    monkeypatch.setenv("IBPIPELINE_DATA_DIR", "unused")
    monkeypatch.delenv("IBPIPELINE_DATA_DIR")  # absent now, and removed again after the test
    (tmp_path / ".env").write_text(f"IBPIPELINE_DATA_DIR={tmp_path / 'from_env'}\n")
    monkeypatch.chdir(tmp_path)
    statement = PUBLIC / "pp_file26_two_accounts.xml"
    assert main(["import", "--no-marts", str(statement)]) == 0
    assert list((tmp_path / "from_env" / "normalized").rglob("*.parquet"))


def test_a_dbt_failure_shows_dbts_own_error_first() -> None:
    from dagster_dbt.errors import DagsterDbtCliRuntimeError

    from ibpipeline.cli import _one_line

    preamble = (
        "The dbt CLI process with command\n\n`dbt build --vars {}`\n\nfailed with exit code `2`."
    )
    error = DagsterDbtCliRuntimeError(
        description=preamble + " Check the stdout " + "x" * 400 + "\n\nErrors parsed from dbt "
        'logs:\n\nIO Error: Cannot open file "/nowhere/ibpipeline.duckdb"'
    )
    line = _one_line(error)
    assert line == 'dbt failed (exit 2): IO Error: Cannot open file "/nowhere/ibpipeline.duckdb"'
