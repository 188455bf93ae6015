"""The Flex Web Service simulator, exercised with raw HTTP requests over loopback."""

from __future__ import annotations

import http.client
import logging
import re
import signal
from collections.abc import Iterator
from datetime import UTC, date, datetime

import httpx
import pytest
from lxml import etree

from ibpipeline.flex.errors import ERROR_MESSAGES
from ibpipeline.flex.ratelimit import IBKR_RATE_LIMITS, RateLimit
from ibpipeline.sim.flex_server import (
    GET_STATEMENT,
    SEND_REQUEST,
    FlexSimulator,
    SimQuery,
    ibkr_timestamp,
    last_business_day_before,
    sim_queries,
    split_accounts,
    world_statement_source,
)
from tests.sim.background import started_with_sigint_ignored

TODAY = date(2026, 1, 15)
UA = {"User-Agent": "Python/3.11"}


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def calls() -> list[tuple]:
    return []


@pytest.fixture
def sim(flex_statement, flex_token, flex_query_id, clock, calls) -> Iterator[FlexSimulator]:
    def source(*args):
        calls.append(args)
        return flex_statement

    simulator = FlexSimulator(
        source,
        flex_token,
        {flex_query_id},
        rate_limits=(RateLimit(1000, 1.0),),
        expired_tokens={"999999999999999999999999"},
        today=lambda: TODAY,
        clock=clock,
    )
    with simulator:
        yield simulator


def get(sim: FlexSimulator, endpoint: str, headers: dict | None = UA, **params) -> httpx.Response:
    return httpx.get(f"{sim.base_url}/{endpoint}", params=params, headers=headers, timeout=5)


def fields(response: httpx.Response) -> dict[str, str]:
    root = etree.fromstring(response.content)
    assert root.tag == "FlexStatementResponse"
    return {child.tag: child.text for child in root}


def send(sim, token, query, **params) -> httpx.Response:
    return get(sim, SEND_REQUEST, t=token, q=query, v=3, **params)


def test_send_request_envelope_exactly_as_ibkr_writes_it(sim, flex_token, flex_query_id):
    response = send(sim, flex_token, flex_query_id)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    text = response.text
    assert not text.startswith("<?xml")
    assert re.match(
        r"<FlexStatementResponse timestamp='\d{2} [A-Z][a-z]+, \d{4} \d{2}:\d{2} [AP]M E[SD]T'>\n"
        r"<Status>Success</Status>\n<ReferenceCode>\d{10}</ReferenceCode>\n<Url>[^<]+</Url>\n"
        r"</FlexStatementResponse>\n$",
        text,
    ), text
    assert fields(response)["Url"] == f"{sim.base_url}/GetStatement"


def test_get_statement_serves_source_bytes(sim, flex_token, flex_query_id, flex_statement, calls):
    reference = fields(send(sim, flex_token, flex_query_id))["ReferenceCode"]
    response = get(sim, GET_STATEMENT, t=flex_token, q=reference, v=3)
    assert response.status_code == 200 and response.content == flex_statement
    assert calls == [(flex_query_id, None, None, None)]
    again = get(sim, GET_STATEMENT, t=flex_token, q=reference, v=3)
    assert again.content == flex_statement and len(calls) == 1  # rendered once per reference


def test_generation_polls_answer_warn_1019_then_statement(
    sim, flex_token, flex_query_id, flex_statement
):
    sim.generation_polls = 2
    reference = fields(send(sim, flex_token, flex_query_id))["ReferenceCode"]
    answers = [get(sim, GET_STATEMENT, t=flex_token, q=reference, v=3) for _ in range(3)]
    for answer in answers[:2]:
        assert fields(answer) == {
            "Status": "Warn",
            "ErrorCode": "1019",
            "ErrorMessage": "Statement generation in progress. Please try again shortly.",
        }
    assert answers[2].content == flex_statement


@pytest.mark.parametrize(
    ("token", "query", "code"),
    [
        ("123456789012345678901234", None, 1015),
        ("", None, 1015),
        ("999999999999999999999999", None, 1012),
        (None, "424242", 1014),
    ],
)
def test_send_request_errors(sim, flex_token, flex_query_id, token, query, code):
    response = send(sim, flex_token if token is None else token, query or flex_query_id)
    assert response.status_code == 200
    assert fields(response) == {
        "Status": "Fail",
        "ErrorCode": str(code),
        "ErrorMessage": ERROR_MESSAGES[code],
    }
    assert sim.requests[-1].error_code == code


def test_missing_user_agent_is_rejected_with_1020(sim, flex_token, flex_query_id):
    connection = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
    try:
        connection.request(
            "GET",
            f"/AccountManagement/FlexWebService/SendRequest?t={flex_token}&q={flex_query_id}&v=3",
        )
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == 200
    assert b"<ErrorCode>1020</ErrorCode>" in body
    assert b"<ErrorMessage>Invalid request or unable to validate request.</ErrorMessage>" in body
    assert sim.requests[-1].user_agent is None


def test_unknown_or_expired_reference_is_1017(sim, flex_token, flex_query_id, clock):
    assert fields(get(sim, GET_STATEMENT, t=flex_token, q="1234567890", v=3))["ErrorCode"] == "1017"
    sim.reference_ttl_s = 600.0
    reference = fields(send(sim, flex_token, flex_query_id))["ReferenceCode"]
    clock.now += 601.0
    assert fields(get(sim, GET_STATEMENT, t=flex_token, q=reference, v=3))["ErrorCode"] == "1017"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"fd": "20250101"}, 1020),
        ({"td": "20250101"}, 1020),
        ({"fd": "2025-01-01", "td": "20250102"}, 1020),
        ({"fd": "20250102", "td": "20250101"}, 1020),
        ({"fd": "20240101", "td": "20241231"}, 1020),  # 366 days, both ends count
        ({"fd": "20250101", "td": "20260115"}, 1020),
        ({"fd": "20260110", "td": "20260115"}, 1003),  # td = today: not yet published
        ({"p": "0"}, 1020),
        ({"p": "366"}, 1020),
        ({"p": "five"}, 1020),
        ({"v": "4"}, 1020),
    ],
)
def test_window_validation(sim, flex_token, flex_query_id, params, code):
    request = {"t": flex_token, "q": flex_query_id, "v": "3"} | params
    assert fields(get(sim, SEND_REQUEST, **request))["ErrorCode"] == str(code)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"fd": "20250115", "td": "20260114"},
            (date(2025, 1, 15), date(2026, 1, 14), None),
        ),  # 365 days
        ({"fd": "20250101", "td": "20250101"}, (date(2025, 1, 1), date(2025, 1, 1), None)),
        ({"p": "365"}, (None, None, 365)),
        ({"p": "1"}, (None, None, 1)),
        (
            {"fd": "20250101", "td": "20250131", "p": "5"},
            (date(2025, 1, 1), date(2025, 1, 31), None),
        ),
    ],
)
def test_valid_windows_reach_statement_source(
    sim, flex_token, flex_query_id, calls, params, expected
):
    reference = fields(send(sim, flex_token, flex_query_id, **params))["ReferenceCode"]
    assert get(sim, GET_STATEMENT, t=flex_token, q=reference, v=3).status_code == 200
    assert calls == [(flex_query_id, *expected)]


def test_version_defaults_to_2_when_omitted(sim, flex_token, flex_query_id):
    assert fields(get(sim, SEND_REQUEST, t=flex_token, q=flex_query_id))["Status"] == "Success"


def test_unknown_path_is_html_404(sim):
    response = httpx.get(
        f"{sim.root_url}/Universal/servlet/FlexStatementService.SendRequest", headers=UA
    )
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "404 Page Not Found" in response.text
    assert sim.requests[-1].endpoint == "other"


# --- rate limits -----------------------------------------------------------------------------


def test_rate_limit_one_per_second_over_both_endpoints(sim, flex_token, flex_query_id, clock):
    sim.rate_limits = IBKR_RATE_LIMITS
    reference = fields(send(sim, flex_token, flex_query_id))["ReferenceCode"]
    limited = get(sim, GET_STATEMENT, t=flex_token, q=reference, v=3)
    assert fields(limited) == {
        "Status": "Fail",
        "ErrorCode": "1018",
        "ErrorMessage": ERROR_MESSAGES[1018],
    }
    clock.now += 1.0
    assert get(sim, GET_STATEMENT, t=flex_token, q=reference, v=3).status_code == 200
    assert [r.error_code for r in sim.requests] == [None, 1018, None]


def test_rate_limit_ten_per_minute(sim, flex_token, flex_query_id, clock):
    sim.rate_limits = IBKR_RATE_LIMITS
    codes = []
    for _ in range(11):
        codes.append(fields(send(sim, flex_token, flex_query_id)).get("ErrorCode"))
        clock.now += 1.5
    assert codes == [None] * 10 + ["1018"]
    clock.now = 60.0 + 1.5  # the first two requests (t=0, t=1.5) left the window
    assert fields(send(sim, flex_token, flex_query_id))["Status"] == "Success"


def test_rejected_requests_count_toward_the_limit(sim, flex_token, flex_query_id, clock):
    sim.rate_limits = (RateLimit(2, 10.0),)
    results = []
    for moment in (0.0, 1.0, 2.0, 10.5):
        clock.now = moment
        results.append(fields(send(sim, flex_token, flex_query_id)).get("ErrorCode"))
    # at 10.5 only one accepted request (t=1) is in the window, but the rejected one (t=2) counts
    assert results == [None, None, "1018", "1018"]


def test_rate_limit_is_per_token(sim, flex_token, flex_query_id):
    sim.rate_limits = IBKR_RATE_LIMITS
    assert fields(send(sim, "123456789012345678901234", flex_query_id))["ErrorCode"] == "1015"
    assert fields(send(sim, flex_token, flex_query_id))["Status"] == "Success"


def test_lockout_after_repeated_failures_and_extended_by_retries(
    sim, flex_token, flex_query_id, clock
):
    sim.lockout_after, sim.lockout_s = 3, 100.0
    sim.faults.fail_code = 1001
    assert [fields(send(sim, flex_token, flex_query_id))["ErrorCode"] for _ in range(3)] == [
        "1001"
    ] * 3
    sim.faults.fail_code = None
    assert fields(send(sim, flex_token, flex_query_id))["ErrorCode"] == "1025"
    clock.now += 99.0
    assert fields(send(sim, flex_token, flex_query_id))["ErrorCode"] == "1025"  # extends to 199
    clock.now += 99.0
    assert fields(send(sim, flex_token, flex_query_id))["ErrorCode"] == "1025"
    clock.now += 101.0
    assert fields(send(sim, flex_token, flex_query_id))["Status"] == "Success"


# --- faults ----------------------------------------------------------------------------------


def test_fault_queues_and_truncation(sim, flex_token, flex_query_id, flex_statement):
    sim.faults.next_codes = [1009, 1004]
    sim.faults.next_get_codes = [1021]
    sim.faults.truncate_next = 1
    assert fields(send(sim, flex_token, flex_query_id))["ErrorCode"] == "1009"
    assert fields(send(sim, flex_token, flex_query_id))["ErrorCode"] == "1004"
    reference = fields(send(sim, flex_token, flex_query_id))["ReferenceCode"]
    assert fields(get(sim, GET_STATEMENT, t=flex_token, q=reference, v=3))["ErrorCode"] == "1021"
    truncated = get(sim, GET_STATEMENT, t=flex_token, q=reference, v=3).content
    assert truncated == flex_statement[: len(flex_statement) // 2]
    assert get(sim, GET_STATEMENT, t=flex_token, q=reference, v=3).content == flex_statement


def test_forgotten_reference_and_unavailable(sim, flex_token, flex_query_id):
    sim.faults.forget_next_references = 1
    sim.faults.unavailable_next = 1
    assert send(sim, flex_token, flex_query_id).status_code == 503
    reference = fields(send(sim, flex_token, flex_query_id))["ReferenceCode"]
    assert fields(get(sim, GET_STATEMENT, t=flex_token, q=reference, v=3))["ErrorCode"] == "1017"


def test_failing_source_answers_1001(flex_token, flex_query_id):
    def broken(*_):
        raise RuntimeError("renderer bug")

    with FlexSimulator(
        broken, flex_token, {flex_query_id}, rate_limits=(RateLimit(100, 1.0),)
    ) as simulator:
        reference = fields(send(simulator, flex_token, flex_query_id))["ReferenceCode"]
        assert (
            fields(get(simulator, GET_STATEMENT, t=flex_token, q=reference, v=3))["ErrorCode"]
            == "1001"
        )


# --- misc ------------------------------------------------------------------------------------


def test_request_log_and_server_logs_hide_the_token(sim, flex_token, flex_query_id, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    send(sim, flex_token, flex_query_id)
    send(sim, "123456789012345678901234", flex_query_id)
    server_logs = "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith("ibpipeline")
    )
    text = repr(sim.requests) + repr(sim) + server_logs + "".join(capfd.readouterr())
    assert "t=***" in server_logs
    assert flex_token not in text and "123456789012345678901234" not in text


def test_stop_releases_the_port(flex_statement, flex_token, flex_query_id):
    simulator = FlexSimulator(lambda *_: flex_statement, flex_token, {flex_query_id}).start()
    port = simulator.port
    simulator.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    with FlexSimulator(lambda *_: flex_statement, flex_token, {flex_query_id}, port=port) as again:
        assert again.port == port


def test_ibkr_timestamp_format():
    assert (
        ibkr_timestamp(datetime(2012, 8, 28, 14, 37, tzinfo=UTC)) == "28 August, 2012 10:37 AM EDT"
    )
    assert (
        ibkr_timestamp(datetime(2024, 1, 5, 17, 4, tzinfo=UTC)) == "05 January, 2024 12:04 PM EST"
    )


def test_last_business_day_before():
    assert last_business_day_before(date(2026, 1, 12)) == date(2026, 1, 9)  # Monday -> Friday
    assert last_business_day_before(date(2026, 1, 14)) == date(2026, 1, 13)
    assert last_business_day_before(date(2026, 1, 11)) == date(2026, 1, 9)  # Sunday -> Friday


# --- with the simulated world ---------------------------------------------------------------


def _world():
    pytest.importorskip("ibpipeline.sim.flex_statement")
    world_module = pytest.importorskip("ibpipeline.world")
    return world_module.World(seed=7, n_accounts=2, inception=date(2025, 1, 2))


def test_world_statement_source_windows():
    world = _world()
    source = world_statement_source(world, today=lambda: TODAY)
    account_ids = {account.account_id for account in world.accounts}

    def statements(xml: bytes) -> list:
        root = etree.fromstring(xml)
        assert root.tag == "FlexQueryResponse"
        found = root.findall("FlexStatements/FlexStatement")
        assert int(root.find("FlexStatements").get("count")) == len(found)
        return found

    default = statements(source("1", None, None, None))
    assert {s.get("accountId") for s in default} == account_ids
    assert {(s.get("fromDate"), s.get("toDate"), s.get("period")) for s in default} == {
        ("20260114", "20260114", "LastBusinessDay")
    }
    ranged = statements(source("1", date(2025, 3, 3), date(2025, 3, 7), None))
    assert {(s.get("fromDate"), s.get("toDate"), s.get("period")) for s in ranged} == {
        ("20250303", "20250307", "")
    }
    period = statements(source("1", None, None, 5))
    assert {(s.get("fromDate"), s.get("toDate"), s.get("period")) for s in period} == {
        ("20260110", "20260114", "")
    }


def test_client_fetches_world_statement_through_simulator(flex_token, flex_query_id):
    from ibpipeline.flex.client import FlexClient

    world = _world()
    source = world_statement_source(world, today=lambda: TODAY)
    with FlexSimulator(
        source, flex_token, {flex_query_id}, rate_limits=(RateLimit(100, 1.0),), today=lambda: TODAY
    ) as simulator:
        client = FlexClient(
            flex_token, base_url=simulator.base_url, limiter=None, first_poll_delay=0.0
        )
        with client:
            result = client.fetch(flex_query_id, date(2025, 6, 2), date(2025, 6, 6))
    root = etree.fromstring(result.content)
    assert {s.get("accountId") for s in root.iter("FlexStatement")} == {
        a.account_id for a in world.accounts
    }


def test_run_flex_simulator_cli_entry(flex_token):
    pytest.importorskip("ibpipeline.world")
    pytest.importorskip("ibpipeline.sim.flex_statement")
    code = (
        "from datetime import date\n"
        "from ibpipeline.sim.flex_server import run_flex_simulator\n"
        f"run_flex_simulator('127.0.0.1', 0, '{flex_token}', '555', 3, 2, date(2025, 1, 2), 'yyyy-MM-dd', 1)\n"
    )
    # started with SIGINT ignored, as a background job of a script (or a test worker) starts it:
    # the simulator must still stop on SIGINT
    with started_with_sigint_ignored(code) as process:
        line = process.stdout.readline()
        match = re.fullmatch(
            r"Flex simulator listening on (http://127\.0\.0\.1:\d+/AccountManagement/FlexWebService) "
            r"\(query id 555, (\d+) accounts\)\n",
            line,
        )
        assert match, line
        response = httpx.get(
            f"{match[1]}/SendRequest", params={"t": flex_token, "q": "555", "v": 3}, headers=UA
        )
        assert "<Status>Success</Status>" in response.text
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert process.stdout.readline() == "Flex simulator stopped\n"


def test_several_queries_each_belong_to_their_token(flex_statement, flex_token, flex_query_id):
    other = "564738291056473829105647"
    seen: list[str] = []

    def source(query_id, *_):
        seen.append(query_id)
        return flex_statement

    with FlexSimulator(
        source,
        flex_token,
        {flex_query_id},
        rate_limits=(RateLimit(1000, 1.0),),
        query_tokens={"700001": other, "700002": other},
    ) as simulator:
        url = simulator.base_url

        def send(token: str, query: str) -> str:
            params = {"t": token, "q": query, "v": 3}
            return httpx.get(f"{url}/{SEND_REQUEST}", params=params, headers=UA).text

        def reference(text: str) -> str:
            return re.search(r"<ReferenceCode>(\d+)</ReferenceCode>", text)[1]

        assert "<ErrorCode>1014</ErrorCode>" in send(flex_token, "700001")  # another token's
        assert "<ErrorCode>1014</ErrorCode>" in send(other, flex_query_id)
        code = reference(send(other, "700002"))
        get = {"q": code, "v": 3}
        stolen = httpx.get(f"{url}/{GET_STATEMENT}", params={"t": flex_token, **get}, headers=UA)
        assert "<ErrorCode>1017</ErrorCode>" in stolen.text
        mine = httpx.get(f"{url}/{GET_STATEMENT}", params={"t": other, **get}, headers=UA)
        assert mine.content == flex_statement
        assert reference(send(flex_token, flex_query_id))
        assert simulator.token_of("700001") == other
        assert simulator.token_of(flex_query_id) == flex_token
        assert simulator.count(SEND_REQUEST, query="700001") == 1
    assert seen == ["700002"]


def test_split_accounts_and_sim_queries():
    ids = [f"U{i}" for i in range(1, 8)]
    assert split_accounts(ids, 3) == [["U1", "U4", "U7"], ["U2", "U5"], ["U3", "U6"]]
    assert split_accounts(ids, 3, "blocks") == [["U1", "U2", "U3"], ["U4", "U5"], ["U6", "U7"]]
    assert split_accounts(ids, 1) == [ids]
    with pytest.raises(ValueError, match="cannot split 7 accounts over 8 queries"):
        split_accounts(ids, 8)
    with pytest.raises(ValueError, match="layout"):
        split_accounts(ids, 2, "random")
    queries = sim_queries(ids, "800100", ["A", "B", "C"], count=3)
    assert [(q.query_id, q.token) for q in queries] == [
        ("800100", "A"),
        ("800101", "B"),
        ("800102", "C"),
    ]
    assert {q.token for q in sim_queries(ids, "800100", ["S"], count=3)} == {"S"}
    assert sim_queries(ids, "555", ["S"]) == [SimQuery("555", "S", tuple(ids))]
    with pytest.raises(ValueError, match="1 token"):
        sim_queries(ids, "800100", ["A", "B"], count=3)


def test_world_source_renders_only_the_accounts_of_the_query():
    from ibpipeline.world import World

    world = World(seed=5, n_accounts=4, inception=date(2025, 1, 2))
    ids = [a.account_id for a in world.accounts]
    source = world_statement_source(world, accounts_by_query={"1": ids[:1], "2": ids[1:]})
    content = source("2", date(2025, 3, 3), date(2025, 3, 4), None)
    root = etree.fromstring(content)
    assert {s.get("accountId") for s in root.iter("FlexStatement")} == set(ids[1:])


def test_run_flex_simulator_prints_every_query():
    tokens = ["T1", "T2", "T3"]
    code = (
        "from datetime import date\n"
        "from ibpipeline.sim.flex_server import run_flex_simulator\n"
        f"run_flex_simulator('127.0.0.1', 0, 'T1', '555', 3, 5, date(2025, 1, 2), 'yyyy-MM-dd', 0,"
        f" queries=3, tokens={tokens!r}, layout='blocks')\n"
    )
    with started_with_sigint_ignored(code) as process:
        lines = [process.stdout.readline() for _ in range(4)]
        listed = [
            re.fullmatch(r"query (\d+): token #(\d), (\d) accounts (.*)\n", x) for x in lines[:3]
        ]
        assert all(listed), lines
        assert [(m[1], m[2], m[3]) for m in listed] == [
            ("555", "1", "2"),
            ("556", "2", "2"),
            ("557", "3", "1"),
        ]
        match = re.fullmatch(
            r"Flex simulator listening on (http://127\.0\.0\.1:\d+/AccountManagement/FlexWebService) "
            r"\(query ids 555, 556, 557, 5 accounts\)\n",
            lines[3],
        )
        assert match, lines[3]
        ok = httpx.get(
            f"{match[1]}/SendRequest", params={"t": "T2", "q": "556", "v": 3}, headers=UA
        )
        assert "<Status>Success</Status>" in ok.text
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
