"""Fault: the Flex service (or a proxy) echoes the token in its ErrorMessage (issue 10, item 5).

The simulator's ``echo_token`` fault puts the request path (``t=<token>``) and the bare token into
every Fail envelope; the token must appear in no exception, log record, captured output, Dagster
event or stored file.
"""

from __future__ import annotations

import logging
import pickle
import traceback

import dagster as dg
import pytest

from ibpipeline.assets.raw import raw_flex_statement
from ibpipeline.flex.client import FlexClient
from ibpipeline.flex.errors import FlexQueryInvalid, FlexTransientError
from ibpipeline.sim.flex_server import FlexSimulator
from tests.assets.asset_helpers import files_containing, make_resources


def _client(sim: FlexSimulator, token: str) -> FlexClient:
    return FlexClient(
        token,
        base_url=sim.base_url,
        limiter=None,
        first_poll_delay=0,
        poll_interval=0.01,
        transient_backoff=0.01,
        timeout=5.0,
    )


def _texts(exc: BaseException) -> list[str]:
    texts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    texts.append(repr(pickle.loads(pickle.dumps(exc))))
    return texts


@pytest.mark.parametrize(
    ("codes", "expected"),
    [([1014], FlexQueryInvalid), ([1009] * 4, FlexTransientError)],
    ids=["permanent-1014", "transient-1009-logged-then-raised"],
)
def test_echoed_token_is_redacted_from_exceptions_and_logs(
    flex_sim, flex_token, flex_query_id, caplog, capfd, codes, expected
):
    caplog.set_level(logging.DEBUG)
    flex_sim.faults.echo_token = True
    flex_sim.faults.next_codes = list(codes)
    with _client(flex_sim, flex_token) as client, pytest.raises(expected) as raised:
        client.fetch(flex_query_id)
    texts = _texts(raised.value) + [raised.value.ibkr_message]
    texts += [r.getMessage() for r in caplog.records] + [caplog.text]
    captured = capfd.readouterr()
    texts += [captured.out, captured.err]
    assert "t=***" in raised.value.ibkr_message  # the echo did arrive, redacted
    assert "with token ***" in raised.value.ibkr_message
    assert not [t for t in texts if flex_token in t]


def test_echoed_token_never_reaches_the_dagster_event_log(
    flex_sim, flex_query_id, flex_env, instance, data_dir, dagster_home, capfd, caplog
):
    flex_sim.faults.echo_token = True
    flex_sim.faults.fail_code = 1014
    result = dg.materialize(
        [raw_flex_statement],
        instance=instance,
        resources=make_resources(flex_sim, flex_query_id, data_dir),
        partition_key="2025-07-02",
        raise_on_error=False,
    )
    assert not result.success
    failure = result.failure_data_for_node("raw_flex_statement")
    assert "t=***" in str(failure.error.to_string())
    for record in instance.get_event_records(
        dg.EventRecordsFilter(dg.DagsterEventType.STEP_FAILURE)
    ):
        assert flex_env not in str(record.event_log_entry)
    for entry in instance.all_logs(result.run_id):
        assert flex_env not in str(entry)
    assert files_containing(dagster_home, flex_env.encode()) == []
    assert not data_dir.exists() or files_containing(data_dir, flex_env.encode()) == []
    captured = capfd.readouterr()
    assert flex_env not in captured.out + captured.err + caplog.text
