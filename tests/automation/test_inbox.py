import importlib
import json
import os
import re
import time
from datetime import date

import dagster as dg
import pytest
from conftest import make_defs

from ibpipeline import inbox, settings
from ibpipeline.assets.normalized import NORMALIZED_TABLES
from ibpipeline.automation.sensors import build_inbox_sensor, marts_after_inbox
from ibpipeline.cli import main
from ibpipeline.resources import DataDirResource
from ibpipeline.sim.flex_statement import render_statement
from ibpipeline.storage import parquet, rawstore
from tests.fixture_files import corpus_file

START, END = date(2024, 2, 5), date(2024, 2, 9)  # Mon..Fri


def tree(root):
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def statement(world, world_accounts) -> bytes:
    return render_statement(world, world_accounts[:2], START, END)


@pytest.fixture
def inbox_dir(data_dir):
    folder = data_dir / "inbox"
    folder.mkdir(parents=True)
    return folder


def drop(folder, name, content, age_s=60.0):
    path = folder / name
    path.write_bytes(content)
    old = time.time() - age_s
    os.utime(path, (old, old))
    return path


def test_ingest_then_same_bytes_again_is_a_duplicate(
    data_dir, inbox_dir, statement, world, world_accounts
):
    accounts = sorted(world_accounts[:2])
    first = inbox.process_inbox_file(data_dir, inbox_dir, drop(inbox_dir, "a.xml", statement))
    assert first.status == "ingested"
    assert first.accounts == tuple(accounts)
    # the statement's opening NAV row (Friday before fromDate) is stored as a fallback day
    assert first.days_claimed == (date(2024, 2, 2), *(date(2024, 2, d) for d in range(5, 10)))
    assert first.moved_to == inbox_dir / "processed" / "a.xml"
    assert not (inbox_dir / "a.xml").exists()
    manifest = rawstore.read_manifest(data_dir, START).newest
    assert (manifest.source, manifest.sha256) == ("inbox", first.sha256)
    assert rawstore.read_statement(data_dir, first.sha256) == statement
    nav = parquet.read_table("nav_daily", data_dir=data_dir)
    expected = {
        (a, d): world.day(a, d).nav.total_base
        for a in accounts
        for d in world.business_days(world.previous_business_day(START), END)
    }
    assert {(r["account_id"], r["date"]): r["total_base"] for r in nav.to_pylist()} == expected
    before = tree(data_dir / "raw") | tree(data_dir / "normalized")

    # the same content dropped again under another name: moved, nothing written
    second = inbox.process_inbox_file(data_dir, inbox_dir, drop(inbox_dir, "copy.xml", statement))
    assert second.status == "duplicate" and second.partitions == ()
    assert second.moved_to == inbox_dir / "processed" / "copy.xml"
    assert tree(data_dir / "raw") | tree(data_dir / "normalized") == before
    # and again under the first name: kept beside the first copy
    third = inbox.process_inbox_file(data_dir, inbox_dir, drop(inbox_dir, "a.xml", statement))
    assert third.status == "duplicate"
    assert third.moved_to == inbox_dir / "processed" / f"a.{first.sha256[:12]}.xml"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (lambda good: good[: len(good) // 2], "invalid or truncated"),
        (lambda good: b"", "empty file"),
        (lambda good: b"<html><body>not flex</body></html>", "FlexQueryResponse"),
        (lambda good: good.replace(b'accountId="U', b'accountId="U/../', 1), "account id"),
    ],
)
def test_unparseable_file_is_rejected_and_nothing_else_touched(
    data_dir, inbox_dir, statement, content, reason
):
    inbox.process_inbox_file(data_dir, inbox_dir, drop(inbox_dir, "good.xml", statement))
    before = tree(data_dir / "raw") | tree(data_dir / "normalized")
    content = content(statement)
    result = inbox.process_inbox_file(data_dir, inbox_dir, drop(inbox_dir, "bad.xml", content))
    assert result.status == "rejected"
    assert reason in result.reason
    assert (inbox_dir / "rejected" / "bad.xml").read_bytes() == content
    assert reason in (inbox_dir / "rejected" / "bad.xml.reason.txt").read_text()
    assert not (inbox_dir / "bad.xml").exists()
    assert tree(data_dir / "raw") | tree(data_dir / "normalized") == before


def test_file_never_hides_other_accounts_and_a_refetch_takes_back_only_its_own(
    data_dir, inbox_dir, world, world_accounts
):
    """A file of one account takes over that account only; a later statement of the other
    accounts (a Flex re-fetch without it) leaves its rows in place."""
    a, b, c = sorted(world_accounts)
    both = inbox.process_inbox_file(
        data_dir, inbox_dir, drop(inbox_dir, "ab.xml", render_statement(world, [a, b], START, END))
    )
    only_c = render_statement(world, [c], START, START)
    result = inbox.process_inbox_file(data_dir, inbox_dir, drop(inbox_dir, "c.xml", only_c))
    assert result.days_claimed == (date(2024, 2, 2), START)  # + its opening NAV day (fallback)
    day = rawstore.read_manifest(data_dir, START)
    assert [(m.sha256, m.accounts) for m in day.statements] == [
        (result.sha256, (c,)),
        (both.sha256, (a, b)),
    ]

    def nav_accounts(day):
        table = parquet.read_table("nav_daily", data_dir=data_dir, start=day, end=day)
        return sorted(table.column("account_id").to_pylist())

    assert nav_accounts(START) == [a, b, c]  # one day file, rows of both statements
    assert nav_accounts(END) == [a, b]
    refetch = render_statement(world, [a, b], START, START, query_name="refetch")
    inbox.process_inbox_file(data_dir, inbox_dir, drop(inbox_dir, "ab2.xml", refetch))
    assert nav_accounts(START) == [a, b, c]
    nav = parquet.read_table("nav_daily", data_dir=data_dir, start=START, end=START)
    assert {r["account_id"]: r["total_base"] for r in nav.to_pylist()} == {
        x: world.day(x, START).nav.total_base for x in (a, b, c)
    }


def test_sensor_requests_one_run_per_settled_file(data_dir, inbox_dir, statement, instance):
    sensor = build_inbox_sensor(settle_s=5.0)
    defs = make_defs(None, data_dir, sensors=[sensor])
    drop(inbox_dir, "a.xml", statement)
    drop(inbox_dir, "fresh.xml", statement, age_s=0)  # still being written
    drop(inbox_dir, ".hidden.xml", statement)
    drop(inbox_dir, "b.xml.part", statement)
    (inbox_dir / "processed").mkdir()
    with dg.build_sensor_context(
        instance=instance,
        definitions=defs,
        resources={"data_dir": DataDirResource(path=str(data_dir))},
    ) as ctx:
        requests = defs.resolve_sensor_def(sensor.name).evaluate_tick(ctx).run_requests
    assert len(requests) == 1
    config = requests[0].run_config["ops"]["import_inbox_file"]["config"]
    assert config["path"] == str((inbox_dir / "a.xml").resolve())

    # the run ingests and moves the file; materializations are recorded
    result = defs.resolve_job_def("inbox_import_job").execute_in_process(
        instance=instance, run_config=requests[0].run_config
    )
    assert result.success
    assert (inbox_dir / "processed" / "a.xml").is_file()
    mats = result.asset_materializations_for_node("import_inbox_file")
    raw_days = sorted(m.partition for m in mats if m.asset_key == dg.AssetKey("raw_flex_statement"))
    assert raw_days == [f"2024-02-0{d}" for d in (2, *range(5, 10))]
    assert len(instance.get_dynamic_partitions("account")) == 2
    old = time.time() - 60
    os.utime(inbox_dir / "fresh.xml", (old, old))  # fresh.xml has settled meanwhile
    with dg.build_sensor_context(
        instance=instance,
        definitions=defs,
        resources={"data_dir": DataDirResource(path=str(data_dir))},
    ) as ctx:
        (later,) = defs.resolve_sensor_def(sensor.name).evaluate_tick(ctx).run_requests
    assert later.run_config["ops"]["import_inbox_file"]["config"]["path"].endswith("/fresh.xml")
    assert later.run_key != requests[0].run_key

    # the marts follow: one marts_job range run over the days the file claimed
    follow = marts_after_inbox(run_status_context(instance, result.run_id))
    assert follow.tags["dagster/asset_partition_range_start"] == "2024-02-02"
    assert follow.tags["dagster/asset_partition_range_end"] == "2024-02-09"
    assert follow.run_key == f"marts-after-inbox:{result.run_id}"
    # the same bytes again (fresh.xml): a duplicate claims nothing, no marts run
    again = defs.resolve_job_def("inbox_import_job").execute_in_process(
        instance=instance, run_config=later.run_config
    )
    skipped = marts_after_inbox(run_status_context(instance, again.run_id))
    assert isinstance(skipped, dg.SkipReason) and "claimed no report day" in skipped.skip_message


def run_status_context(instance, run_id):
    event = next(
        r.event_log_entry.dagster_event
        for r in instance.get_records_for_run(run_id).records
        if r.event_log_entry.dagster_event
        and r.event_log_entry.dagster_event.event_type_value == "PIPELINE_SUCCESS"
    )
    return dg.build_run_status_sensor_context(
        sensor_name="marts_after_inbox",
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run_id),
    )


def test_rejected_run_fails_with_reason(data_dir, inbox_dir, instance):
    defs = make_defs(None, data_dir)
    path = drop(inbox_dir, "junk.xml", b"not xml at all")
    result = defs.resolve_job_def("inbox_import_job").execute_in_process(
        instance=instance,
        run_config={"ops": {"import_inbox_file": {"config": {"path": str(path)}}}},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "junk.xml rejected" in failure.step_failure_data.error.message
    assert (inbox_dir / "rejected" / "junk.xml.reason.txt").is_file()


def test_cli_import(data_dir, tmp_path, statement, capsys, monkeypatch):
    home = tmp_path / "dagster_home"  # the marts run goes to this instance, not the project's
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    # The definitions module may have been imported earlier in this process with another data
    # folder (as in a full test session): --data-dir must still decide where dbt writes.
    monkeypatch.setenv(settings.DATA_DIR_ENV, str(tmp_path / "elsewhere"))
    importlib.import_module("ibpipeline.definitions")
    path = tmp_path / "dl.xml"
    path.write_bytes(statement)
    odd = tmp_path / "file12.xml"
    odd.write_bytes(file12_in_2024())
    assert main(["import", str(path), str(odd), "--data-dir", str(data_dir)]) == 0
    out, err = capsys.readouterr()
    assert "ingested" in out and "marts rebuilt for" in out
    # the warning lines are printed, and the parse_warnings checks are in the instance
    assert "  warning: trades.conid: 4 value(s) not converted" in err
    with dg.DagsterInstance.get() as instance:
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey(t), "parse_warnings") for t in ("trades", "nav_daily")]
        )
    evaluations = {
        k.asset_key.path[-1]: r.event.dagster_event.event_specific_data for k, r in latest.items()
    }
    assert not evaluations["trades"].passed and evaluations["nav_daily"].passed
    assert evaluations["trades"].severity == dg.AssetCheckSeverity.WARN
    assert evaluations["trades"].metadata["parse_warnings"].value == 4
    assert (data_dir / "ibpipeline.duckdb").is_file()
    assert path.is_file()  # the CLI leaves the file where it is
    assert main(["import", str(path), "--data-dir", str(data_dir)]) == 0
    assert "duplicate" in capsys.readouterr().out
    bad = tmp_path / "bad.xml"
    bad.write_bytes(b"<nope")
    assert main(["import", str(bad), "--data-dir", str(data_dir)]) == 1
    assert "rejected" in capsys.readouterr().err


def file12_in_2024() -> bytes:
    """portfolio-performance's File12 (EPL-1.0, in tests/fixtures): its trades and cash rows carry
    ``conid="XXXXXCAD"``/``"XXXXXUSD"``. Dates moved four years on (2020 -> 2024) so its days are
    daily partitions (which start 2024-01-01)."""
    content = corpus_file("portfolio__testIBFlexStatementFile12.xml").read_bytes()
    return re.sub(rb'"(2019|2020)(\d{4})', lambda m: b'"%d%s' % (int(m[1]) + 4, m[2]), content)


def test_inbox_run_reports_unconverted_values_per_table_as_metadata_and_warn_checks(
    data_dir, inbox_dir, instance
):
    """The inbox path reports parse warnings as the Flex fetch path does: each normalized
    table's materializations carry its ``parse_warnings`` (values not converted) and a sample,
    and its ``parse_warnings`` check WARNs when the file had unconverted values for it."""
    defs = make_defs(None, data_dir)
    path = drop(inbox_dir, "file12.xml", file12_in_2024())
    result = defs.resolve_job_def("inbox_import_job").execute_in_process(
        instance=instance,
        run_config={"ops": {"import_inbox_file": {"config": {"path": str(path)}}}},
    )
    assert result.success
    # the values really are null in the stored rows, their text in extra
    trades = parquet.read_table("trades", data_dir=data_dir).to_pylist()
    assert [r["conid"] for r in trades] == [None] * 4
    assert sorted(dict(r["extra"])["conid"] for r in trades) == ["XXXXXCAD"] + ["XXXXXUSD"] * 3

    mats = result.asset_materializations_for_node("import_inbox_file")

    def table_mats(name):
        return [m for m in mats if m.asset_key == dg.AssetKey(name)]

    assert {m.partition for m in table_mats("trades")} == {
        "2024-01-02", "2024-01-08", "2024-01-15"
    } | {m.partition for m in table_mats("cash_transactions")}  # fmt: skip
    for name, values in (("trades", 4), ("cash_transactions", 10)):
        assert table_mats(name)
        for m in table_mats(name):
            assert m.metadata["parse_warnings"].value == values
            sample = m.metadata["parse_warning_sample"].value
            assert f"{name}.conid: {values} value(s) not converted" in sample
            assert "'XXXXXCAD'" in sample
    for m in table_mats("nav_daily"):
        assert m.metadata["parse_warnings"].value == 0
        assert "parse_warning_sample" not in m.metadata

    checks = {
        e.asset_key.path[-1]: e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "parse_warnings"
    }
    assert set(checks) == set(NORMALIZED_TABLES)
    assert {e.severity for e in checks.values()} == {dg.AssetCheckSeverity.WARN}
    failed = {
        name: e.metadata["parse_warnings"].value for name, e in checks.items() if not e.passed
    }
    # + the AccountInformation element outside the FlexStatement (not imported)
    assert failed == {"trades": 4, "cash_transactions": 10, "account_info": 1}
    assert (
        "AccountInformation outside FlexStatement"
        in checks["account_info"].metadata["sample"].value
    )
    assert "XXXXXUSD" in checks["cash_transactions"].metadata["sample"].value
    (output,) = [
        e for e in result.all_events if e.is_successful_output and e.step_key == "import_inbox_file"
    ]
    assert output.event_specific_data.metadata["parse_warnings"].value == 15


def test_sections_not_imported_and_unpriced_rows_are_import_warnings(
    data_dir, inbox_dir, capsys, caplog
):
    """vtandchill (MIT, in tests/fixtures) carries FxPositions and NetStockPositionSummary rows
    the pipeline does not model, and its query lacks prices for 10 reconstructed position rows:
    each is a warning line of the import (CLI, ledger) and a parse warning of its table. A later
    import whose days overlap re-reads the earlier statement without repeating its warnings."""
    first = corpus_file("opensteuerauszug__vtandchill_2025.xml")
    assert main(["import", "--no-marts", "--data-dir", str(data_dir), str(first)]) == 0
    err = capsys.readouterr().err
    lines = [
        "section NetStockPositionSummary not imported: 1 row(s), kept in the raw file",
        "section FxPositions not imported: 2 row(s), kept in the raw file",
        "account U12349876: 10 daily position rows have no price (the Flex query lacks "
        "PriorPeriodPositions); their values are null",
    ]
    for line in lines:
        assert f"  warning: {line}\n" in err
    sha = rawstore.sha256_hex(first.read_bytes())
    assert set(lines) <= set(json.loads(inbox.ledger_path(data_dir, sha).read_text())["warnings"])

    result = inbox.import_statement(data_dir, drop(inbox_dir, "v.xml", first.read_bytes()))
    assert result.status == "duplicate"
    again = inbox.import_statement(
        data_dir,
        drop(inbox_dir, "copy.xml", first.read_bytes() + b"\n"),  # new bytes
    )
    assert sorted((w.table, w.values) for w in again.problems) == [
        ("account_info", 1),  # NetStockPositionSummary
        ("account_info", 1),  # FxPositions
        ("positions_daily", 10),  # unpriced rows
    ]
    assert all(w.line.startswith(f"statement {again.sha256[:12]}: ") for w in again.problems)

    # an overlapping statement of another account re-reads vtandchill's days: nothing repeated
    caplog.clear()
    other = corpus_file("opensteuerauszug__corporate_action_2025.xml")
    with caplog.at_level("WARNING"):
        assert main(["import", "--no-marts", "--data-dir", str(data_dir), str(other)]) == 0
    err = capsys.readouterr().err
    assert "U12349876" not in err + caplog.text
    assert "  warning: account U1234567: 3 daily position rows have no price" in err
