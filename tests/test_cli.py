import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ibpipeline.cli import build_parser, main

PUBLIC = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "flex" / "public"


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
