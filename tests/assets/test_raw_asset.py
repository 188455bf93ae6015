from datetime import date

import dagster as dg
import pytest
from asset_helpers import files_containing, make_resources, tree_digest

from ibpipeline.assets.raw import raw_flex_statement, statement_accounts
from ibpipeline.automation.ranges import range_tags
from ibpipeline.flex.errors import FlexTokenInvalid
from ibpipeline.flex.ratelimit import RateLimit
from ibpipeline.partitions import InvalidAccountIdError
from ibpipeline.sim.flex_server import FlexSimulator
from ibpipeline.storage import rawstore

FIXTURE_ACCOUNTS = ["U1234567", "U1234568"]


def materialize(instance, resources, **kwargs):
    return dg.materialize([raw_flex_statement], instance=instance, resources=resources, **kwargs)


def test_single_partition(flex_sim, flex_query_id, flex_statement, instance, data_dir, flex_env):
    result = materialize(
        instance, make_resources(flex_sim, flex_query_id, data_dir), partition_key="2025-07-02"
    )
    assert result.success
    sends = [r for r in flex_sim.requests if r.endpoint == "SendRequest"]
    assert [(r.fd, r.td) for r in sends] == [("20250702", "20250702")]
    manifest = rawstore.read_manifest(data_dir, date(2025, 7, 2)).newest
    assert manifest.accounts == tuple(FIXTURE_ACCOUNTS)
    assert (manifest.from_date, manifest.to_date) == (date(2025, 7, 2), date(2025, 7, 2))
    assert rawstore.read_statement(data_dir, manifest.sha256) == flex_statement
    assert instance.get_dynamic_partitions("account") == FIXTURE_ACCOUNTS
    meta = result.asset_materializations_for_node("raw_flex_statement")[0].metadata
    assert meta["sha256"].value == manifest.sha256
    assert meta["size_bytes"].value == len(flex_statement)
    assert meta["http_requests"].value == 2  # SendRequest + GetStatement


def test_range_run_is_one_request_and_refetch_writes_nothing(
    flex_sim, flex_query_id, instance, data_dir, flex_env
):
    resources = make_resources(flex_sim, flex_query_id, data_dir)
    result = materialize(instance, resources, tags=range_tags("2025-07-01", "2025-07-10"))
    assert result.success
    assert flex_sim.count("SendRequest") == 1
    mats = result.asset_materializations_for_node("raw_flex_statement")
    assert sorted(m.partition for m in mats) == [f"2025-07-{d:02d}" for d in range(1, 11)]
    days = sorted((data_dir / "raw/flex/by_date").iterdir())
    assert [p.stem for p in days] == [f"2025-07-{d:02d}" for d in range(1, 11)]
    before = {p: p.stat().st_mtime_ns for p in data_dir.rglob("*") if p.is_file()}

    again = materialize(instance, resources, tags=range_tags("2025-07-01", "2025-07-10"))
    assert again.success
    meta = again.asset_materializations_for_node("raw_flex_statement")[0].metadata
    assert meta["statements_written"].value == 0
    assert meta["manifests_changed"].value == 0
    assert {p: p.stat().st_mtime_ns for p in data_dir.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_range_over_365_days_is_split_into_windows(
    flex_sim, flex_query_id, instance, data_dir, flex_env
):
    result = materialize(
        instance,
        make_resources(flex_sim, flex_query_id, data_dir),
        tags=range_tags("2024-01-01", "2025-02-03"),
    )
    assert result.success
    sends = [(r.fd, r.td) for r in flex_sim.requests if r.endpoint == "SendRequest"]
    assert sends == [("20240101", "20241230"), ("20241231", "20250203")]
    assert len(list((data_dir / "raw/flex/by_date").iterdir())) == 400
    assert rawstore.read_manifest(data_dir, date(2024, 12, 31)).newest.from_date == date(
        2024, 12, 31
    )
    # Both windows returned the same bytes: stored once.
    assert len(list((data_dir / "raw/flex/statements").rglob("*.xml"))) == 1


def test_failing_fetch_keeps_earlier_data_and_never_leaks_the_token(
    flex_sim, flex_query_id, instance, data_dir, dagster_home, flex_env, monkeypatch, capsys, caplog
):
    resources = make_resources(flex_sim, flex_query_id, data_dir)
    assert materialize(instance, resources, partition_key="2025-07-02").success
    before = tree_digest(data_dir)

    wrong = "999999999999999999999999"
    monkeypatch.setenv("IBKR_FLEX_TOKEN", wrong)
    failed = materialize(instance, resources, partition_key="2025-07-02", raise_on_error=False)
    assert not failed.success
    assert flex_sim.requests[-1].error_code == 1015
    failure = failed.failure_data_for_node("raw_flex_statement")
    assert failure.error.cause.cls_name == FlexTokenInvalid.__name__
    assert tree_digest(data_dir) == before

    flex_sim.faults.fail_code = 1012  # expired token, right token this time
    monkeypatch.setenv("IBKR_FLEX_TOKEN", flex_env)
    assert not materialize(
        instance, resources, partition_key="2025-07-03", raise_on_error=False
    ).success
    assert rawstore.read_manifest(data_dir, date(2025, 7, 3)) is None

    for token in (flex_env, wrong):
        assert files_containing(dagster_home, token.encode()) == []
        assert files_containing(data_dir, token.encode()) == []
        captured = capsys.readouterr()
        assert token not in captured.out + captured.err
        assert token not in caplog.text
        for record in instance.get_event_records(
            dg.EventRecordsFilter(dg.DagsterEventType.STEP_FAILURE)
        ):
            assert token not in str(record.event_log_entry)
    for run in instance.get_runs():
        assert run.run_config == {}


def test_invalid_account_id_registers_nothing(
    flex_query_id, flex_statement, flex_token, instance, data_dir, flex_env
):
    bad = flex_statement.replace(b'accountId="U1234568"', b'accountId="U12|34"')
    with FlexSimulator(
        lambda *_: bad, flex_token, {flex_query_id}, rate_limits=(RateLimit(1000, 1.0),)
    ) as sim:
        result = materialize(
            instance,
            make_resources(sim, flex_query_id, data_dir),
            partition_key="2025-07-02",
            raise_on_error=False,
        )
    assert not result.success
    assert (
        result.failure_data_for_node("raw_flex_statement").error.cause.cls_name
        == "InvalidAccountIdError"
    )
    assert instance.get_dynamic_partitions("account") == []
    assert rawstore.read_manifest(data_dir, date(2025, 7, 2)) is None


def test_statement_accounts_reads_every_statement(flex_statement):
    assert statement_accounts(flex_statement) == tuple(FIXTURE_ACCOUNTS)
    with pytest.raises(InvalidAccountIdError):
        statement_accounts(
            b'<FlexQueryResponse><FlexStatements><FlexStatement accountId="../x"/></FlexStatements></FlexQueryResponse>'
        )
