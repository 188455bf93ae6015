from datetime import date, timedelta

import pytest

import ibpipeline.assets.normalized as normalized
from ibpipeline.automation.backfill import check_range, run_backfill
from ibpipeline.automation.ranges import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    account_range_tags,
    range_tags,
)
from ibpipeline.automation.sensors import normalize_requests_after
from ibpipeline.storage import parquet, rawstore

START = date(2024, 1, 2)
END = START + timedelta(days=399)  # 400 days -> two <= 365-day windows


@pytest.fixture
def parse_calls(monkeypatch):
    calls = []
    real = normalized.parse_statement
    monkeypatch.setattr(
        normalized, "parse_statement", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    return calls


def assert_normalized(data_dir, world, accounts, first, last):
    nav = parquet.read_table("nav_daily", data_dir=data_dir)
    got = {(r["account_id"], r["date"]): r["total_base"] for r in nav.to_pylist()}
    days = world.business_days(first, last)
    assert got == {(a, d): world.day(a, d).nav.total_base for a in accounts for d in days}
    n_days = (last - first).days + 1
    assert len(parquet.list_partitions("trades", data_dir=data_dir)) == len(accounts) * n_days


@pytest.mark.slow
def test_400_day_backfill_three_accounts_two_requests_each_statement_parsed_once(
    defs, instance, sim, data_dir, world, world_accounts, parse_calls
):
    """One raw range run (a raw-only backfill, discovery or `ibpipeline backfill`), then the
    normalized run the chaining sensor requests for it, over all accounts."""
    raw = defs.resolve_job_def("flex_raw_job").execute_in_process(
        instance=instance, tags=range_tags(START.isoformat(), END.isoformat())
    )
    sends = [r for r in sim.requests if r.endpoint == "SendRequest"]
    assert [(r.fd, r.td) for r in sends] == [("20240102", "20241231"), ("20250101", "20250204")]
    assert rawstore.read_manifest(data_dir, END).from_date == date(2025, 1, 1)
    registered = instance.get_dynamic_partitions("account")
    assert sorted(registered) == sorted(world_accounts)
    (request,) = normalize_requests_after(instance.get_run_by_id(raw.run_id), registered)
    assert request.job_name == "flex_normalize_job"
    assert request.tags[RANGE_START_TAG] == f"{registered[0]}|{START}"
    assert request.tags[RANGE_END_TAG] == f"{registered[-1]}|{END}"

    # Normalizing all 1200 account-days takes minutes of Dagster event bookkeeping on SQLite
    # (see bench/backfill.py); a range straddling both statements shows the same property.
    first, last = date(2024, 12, 27), date(2025, 1, 6)
    tags = account_range_tags(registered[0], registered[-1], first, last)
    assert (
        defs.resolve_job_def(request.job_name)
        .execute_in_process(instance=instance, tags=tags)
        .success
    )
    assert len(parse_calls) == 2  # each statement once, for all accounts
    assert sim.count("SendRequest") == 2
    assert_normalized(data_dir, world, world_accounts, first, last)


@pytest.mark.slow
def test_cli_backfill_fetches_once_and_normalizes_every_account_in_one_run(
    defs, instance, sim, data_dir, world, world_accounts, parse_calls
):
    first, last = date(2024, 3, 4), date(2024, 3, 8)
    result = run_backfill(defs, instance, first, last)
    assert sim.count("SendRequest") == 1
    assert len(parse_calls) == 1
    assert len(result.normalize_run_ids) == 1
    assert sorted(result.accounts) == sorted(world_accounts)
    raw_run = instance.get_run_by_id(result.raw_run_id)
    assert raw_run.tags["ibpipeline/normalize_accounts"] == "none"  # no second normalize
    assert_normalized(data_dir, world, world_accounts, first, last)
    with pytest.raises(ValueError, match="not registered"):
        run_backfill(defs, instance, first, last, accounts=["U9999999"])


def test_backfill_range_is_checked():
    with pytest.raises(ValueError, match="after its end"):
        check_range(date(2024, 3, 2), date(2024, 3, 1))
    with pytest.raises(ValueError, match="before the first partition"):
        check_range(date(2020, 1, 1), date(2024, 3, 1))
