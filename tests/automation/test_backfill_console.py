"""What ``ibpipeline backfill`` prints: on success nothing but warnings/errors and its one good
line; on failure one clear line (no Dagster debug log, no stack trace). Runs the console script
as a user would, against the Flex simulator on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import QUERY_ID

from ibpipeline import settings
from ibpipeline.automation.backfill import last_backfill_day

ROOT = Path(__file__).resolve().parents[2]
BAD_TOKEN = "1" * 24


def run_cli(tmp_path: Path, sim, token: str, *args: str) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    if not home.exists():
        home.mkdir()
        config = (ROOT / "dagster.yaml").read_text()
        config = config.replace("base_dir: .dagster_storage", f"base_dir: {home / 'storage'}")
        (home / "dagster.yaml").write_text(config)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),  # this checkout, whichever one the venv was installed from
        "DAGSTER_HOME": str(home),
        settings.FLEX_TOKEN_ENV: token,
        settings.FLEX_QUERY_ID_ENV: QUERY_ID,
        settings.FLEX_BASE_URL_ENV: sim.base_url,
        settings.DATA_DIR_ENV: str(tmp_path / "data"),
    }
    ibpipeline = Path(sys.executable).with_name("ibpipeline")
    return subprocess.run(
        [str(ibpipeline), "backfill", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def dagster_log_levels(text: str) -> set[str]:
    """Levels of the Dagster console lines in ``text`` (``... - dagster - LEVEL - ...``)."""
    return {line.split(" - ")[2] for line in text.splitlines() if " - dagster - " in line}


@pytest.mark.slow
def test_backfill_prints_its_one_line_and_a_failure_one_clear_line(tmp_path, sim, flex_token):
    ok = run_cli(tmp_path, sim, flex_token, "--start", "2024-02-05", "--end", "2024-02-07")
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert len(lines) == 1, ok.stdout
    (line,) = lines
    assert line.startswith("backfilled 2024-02-05..2024-02-07 in run ")
    assert dagster_log_levels(ok.stderr) <= {"WARNING", "ERROR", "CRITICAL"}, ok.stderr
    assert sim.count("SendRequest") == 1

    failed = run_cli(tmp_path, sim, BAD_TOKEN, "--start", "2024-02-05", "--end", "2024-02-07")
    assert failed.returncode == 1
    assert failed.stdout == ""
    errors = failed.stderr.splitlines()
    assert len(errors) == 1, failed.stderr
    (error,) = errors
    assert error.startswith("error: ") and "1015" in error, error
    assert BAD_TOKEN not in error


def test_backfill_starting_after_the_last_published_day_requests_nothing(tmp_path, sim, flex_token):
    today = last_backfill_day() + timedelta(days=1)
    refused = run_cli(tmp_path, sim, flex_token, "--start", str(today), "--end", str(today))
    assert refused.returncode == 2
    assert refused.stdout == ""
    (error,) = refused.stderr.splitlines()
    assert error.startswith(f"error: --start {today} is after {today - timedelta(days=1)}, "), error
    assert sim.count("SendRequest") == 0


@pytest.mark.slow
def test_backfill_ending_after_the_last_published_day_is_clamped_to_it(tmp_path, sim, flex_token):
    last = last_backfill_day()
    first, asked = last - timedelta(days=1), last + timedelta(days=3)
    done = run_cli(
        tmp_path, sim, flex_token, "--start", str(first), "--end", str(asked), "--no-marts"
    )
    assert done.returncode == 0, done.stderr
    assert f"note: --end {asked} clamped to {last}, " in done.stderr
    assert done.stdout.startswith(f"backfilled {first}..{last} in run ")
    sends = [(r.fd, r.td) for r in sim.requests if r.endpoint == "SendRequest"]
    assert sends == [(f"{first:%Y%m%d}", f"{last:%Y%m%d}")]
    assert sim.count(error_code=1003) == 0
