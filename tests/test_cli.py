import os
import shutil
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from ibpipeline.assets import NORMALIZED_TABLES
from ibpipeline.cli import build_parser, main
from ibpipeline.demo import report, run_demo
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
    """``--help`` describes every option (with its default where it has one)."""
    import argparse

    from ibpipeline.cli import build_parser

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    undocumented = [
        f"{p.prog} {a.option_strings or a.dest}"
        for p in parsers(build_parser())
        for a in p._actions
        if not isinstance(a, argparse._SubParsersAction | argparse._HelpAction) and not a.help
    ]
    assert undocumented == []


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
