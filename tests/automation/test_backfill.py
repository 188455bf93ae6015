from datetime import date, timedelta

import pytest

import ibpipeline.assets.normalized as normalized
from ibpipeline.automation.backfill import check_range, run_backfill
from ibpipeline.automation.ranges import RANGE_END_TAG, RANGE_START_TAG, range_tags
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


def assert_history_complete(data_dir, world, accounts):
    nav = parquet.read_table("nav_daily", data_dir=data_dir)
    got = {(r["account_id"], r["date"]): r["total_base"] for r in nav.to_pylist()}
    days = world.business_days(START, END)
    assert got == {(a, d): world.day(a, d).nav.total_base for a in accounts for d in days}
    assert len(parquet.list_partitions("trades", data_dir=data_dir)) == len(accounts) * 400


@pytest.mark.slow
def test_cli_backfill_three_accounts_400_days(
    defs, instance, sim, data_dir, world, world_accounts, parse_calls
):
    result = run_backfill(defs, instance, START, END)
    sends = [r for r in sim.requests if r.endpoint == "SendRequest"]
    assert [(r.fd, r.td) for r in sends] == [
        ("20240102", "20241231"),
        ("20250101", "20250204"),
    ]
    assert len(parse_calls) == 2  # each statement parsed once, for all accounts
    assert len(result.normalize_run_ids) == 1
    assert sorted(result.accounts) == sorted(world_accounts)
    assert rawstore.read_manifest(data_dir, END).from_date == date(2025, 1, 1)
    assert_history_complete(data_dir, world, world_accounts)


@pytest.mark.slow
def test_raw_range_run_then_chained_normalize_parses_each_statement_once(
    defs, instance, sim, data_dir, world, world_accounts, parse_calls
):
    """The daemon path: one raw range run (e.g. from a raw-only backfill or discovery), then the
    run the chaining sensor requests for it."""
    raw = defs.resolve_job_def("flex_raw_job").execute_in_process(
        instance=instance, tags=range_tags(START.isoformat(), END.isoformat())
    )
    assert sim.count("SendRequest") == 2
    registered = instance.get_dynamic_partitions("account")
    (request,) = normalize_requests_after(instance.get_run_by_id(raw.run_id), registered)
    assert request.tags[RANGE_START_TAG] == f"{registered[0]}|{START}"
    assert request.tags[RANGE_END_TAG] == f"{registered[-1]}|{END}"
    assert (
        defs.resolve_job_def(request.job_name)
        .execute_in_process(instance=instance, tags=request.tags)
        .success
    )
    assert len(parse_calls) == 2
    assert sim.count("SendRequest") == 2
    assert_history_complete(data_dir, world, world_accounts)


def test_backfill_range_is_checked():
    with pytest.raises(ValueError, match="after its end"):
        check_range(date(2024, 3, 2), date(2024, 3, 1))
    with pytest.raises(ValueError, match="before the first partition"):
        check_range(date(2020, 1, 1), date(2024, 3, 1))
