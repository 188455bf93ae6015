"""FlexClient over the real Flex simulator on loopback, plus the rate limiter and response parser.

Most tests share one virtual clock between client and simulator: the client's ``sleep`` advances
the simulator's clock, so IBKR's real timings (60 s rate waits, 1 s limits) run instantly and
deterministically while every request still goes over a real socket.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from datetime import date, timedelta

import pytest

from ibpipeline.flex import ratelimit
from ibpipeline.flex.client import (
    DEFAULT_USER_AGENT,
    Envelope,
    FlexClient,
    parse_response,
    split_range,
)
from ibpipeline.flex.errors import (
    ERROR_MESSAGES,
    FlexAccountInvalid,
    FlexConnectionError,
    FlexError,
    FlexInvalidRequest,
    FlexIPRestricted,
    FlexLegacyQuery,
    FlexLockout,
    FlexQueryInvalid,
    FlexRateLimited,
    FlexReferenceCodeInvalid,
    FlexRequestError,
    FlexResponseError,
    FlexServiceInactive,
    FlexStatementNotAvailable,
    FlexStatementTimeout,
    FlexTokenExpired,
    FlexTokenInvalid,
    FlexTransientError,
    redact,
)
from ibpipeline.flex.ratelimit import IBKR_RATE_LIMITS, RateLimit, RateLimiter, shared_limiter
from ibpipeline.sim.flex_server import GET_STATEMENT, SEND_REQUEST, FlexSimulator

LOOSE = (RateLimit(1000, 1.0),)
OTHER_TOKEN = "400300200100900800700600"
EXPIRED_TOKEN = "111122223333444455556666"


class VirtualClock:
    """Monotonic seconds that only move when someone sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.0)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def sim(
    flex_statement: bytes, flex_token: str, flex_query_id: str, clock: VirtualClock
) -> Iterator[FlexSimulator]:
    simulator = FlexSimulator(
        lambda *_: flex_statement,
        flex_token,
        {flex_query_id},
        rate_limits=LOOSE,
        expired_tokens={EXPIRED_TOKEN},
        today=lambda: date(2026, 1, 15),
        clock=clock,
    )
    with simulator:
        yield simulator


def make_client(sim: FlexSimulator, clock: VirtualClock, token: str, **overrides) -> FlexClient:
    """A client with production timings on the virtual clock and no client-side limiter."""
    options = {
        "base_url": sim.base_url,
        "limiter": None,
        "sleep": clock.sleep,
        "clock": clock,
        "timeout": 5.0,
    }
    return FlexClient(token, **(options | overrides))


# --- success paths ---------------------------------------------------------------------------


def test_fetch_returns_statement_and_metadata(
    sim, clock, flex_token, flex_query_id, flex_statement
):
    with make_client(sim, clock, flex_token) as client:
        result = client.fetch(flex_query_id)

    assert result.content == flex_statement
    assert (result.requests, result.send_requests, result.not_ready_polls) == (2, 1, 0)
    send, get = sim.requests
    assert (send.endpoint, send.query, send.v, send.status) == (
        SEND_REQUEST,
        flex_query_id,
        "3",
        "Success",
    )
    assert (get.endpoint, get.query, get.status) == (
        GET_STATEMENT,
        result.reference_code,
        "Statement",
    )
    assert len(result.reference_code) == 10 and result.reference_code.isdigit()
    assert send.user_agent == get.user_agent == DEFAULT_USER_AGENT
    assert (send.fd, send.td, send.p) == (None, None, None)
    assert get.at - send.at >= client.first_poll_delay  # waited before the first GetStatement
    assert len(result.sha256) == 64


def test_fetch_sends_date_window_and_period(sim, clock, flex_token, flex_query_id):
    with make_client(sim, clock, flex_token) as client:
        dated = client.fetch(flex_query_id, date(2025, 1, 1), date(2025, 12, 31))
        period = client.fetch(flex_query_id, period_days=7)

    sends = [r for r in sim.requests if r.endpoint == SEND_REQUEST]
    assert [(r.fd, r.td, r.p) for r in sends] == [("20250101", "20251231", None), (None, None, "7")]
    assert (dated.from_date, dated.to_date, dated.period_days) == (
        date(2025, 1, 1),
        date(2025, 12, 31),
        None,
    )
    assert period.period_days == 7


def test_client_limiter_keeps_ibkr_limits_without_1018(sim, clock, flex_token, flex_query_id):
    sim.rate_limits = IBKR_RATE_LIMITS
    sim.generation_polls = 12  # 14 requests: more than 10 per minute
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    with make_client(
        sim, clock, flex_token, limiter=limiter, first_poll_delay=0.0, poll_interval=0.0
    ) as client:
        result = client.fetch(flex_query_id)

    assert result.requests == 14 and result.not_ready_polls == 12
    assert sim.count(error_code=1018) == 0
    times = [r.at for r in sim.requests]
    assert all(b - a >= 1.0 for a, b in zip(times, times[1:], strict=False))
    assert all(b - a >= 60.0 for a, b in zip(times, times[10:], strict=False))


def test_shared_limiter_is_used_by_default(flex_token):
    client = FlexClient(flex_token)
    try:
        assert client.limiter is shared_limiter(flex_token)
        assert client.limiter is not shared_limiter(OTHER_TOKEN)
    finally:
        client.close()


# --- 1019 ------------------------------------------------------------------------------------


def test_not_ready_polls_same_reference_then_succeeds(
    sim, clock, flex_token, flex_query_id, flex_statement
):
    sim.generation_polls = 3
    with make_client(sim, clock, flex_token, poll_interval=5.0, poll_backoff=2.0) as client:
        result = client.fetch(flex_query_id)

    assert result.content == flex_statement and result.not_ready_polls == 3
    gets = [r for r in sim.requests if r.endpoint == GET_STATEMENT]
    assert [r.status for r in gets] == ["Warn", "Warn", "Warn", "Statement"]
    assert [r.error_code for r in gets[:3]] == [1019, 1019, 1019]
    assert {r.query for r in gets} == {result.reference_code}
    gaps = [b.at - a.at for a, b in zip(gets, gets[1:], strict=False)]
    assert gaps == [5.0, 10.0, 20.0]  # back-off between polls
    assert sim.count(SEND_REQUEST) == 1


def test_not_ready_forever_times_out(sim, clock, flex_token, flex_query_id):
    sim.generation_polls = 10**9
    with (
        make_client(sim, clock, flex_token, poll_deadline=120.0) as client,
        pytest.raises(FlexStatementTimeout, match="1019"),
    ):
        client.fetch(flex_query_id)

    gets = [r for r in sim.requests if r.endpoint == GET_STATEMENT]
    assert 3 <= len(gets) <= 20
    assert gets[-1].at - sim.requests[0].at <= 120.0 + 1e-9
    assert sim.count(SEND_REQUEST) == 1


# --- 1018 ------------------------------------------------------------------------------------


def test_rate_limited_by_simulator_waits_then_succeeds(
    sim, clock, flex_token, flex_query_id, flex_statement
):
    sim.rate_limits = IBKR_RATE_LIMITS
    with make_client(sim, clock, flex_token, first_poll_delay=0.0) as client:
        result = client.fetch(flex_query_id)

    assert result.content == flex_statement
    limited = [i for i, r in enumerate(sim.requests) if r.error_code == 1018]
    assert limited, "the simulator should have answered 1018 to the immediate GetStatement"
    for i in limited:
        retry = sim.requests[i + 1]
        assert retry.at - sim.requests[i].at >= 60.0
        assert retry.endpoint == sim.requests[i].endpoint


def test_rate_limited_forever_raises_after_bounded_waits(sim, clock, flex_token, flex_query_id):
    sim.faults.fail_code = 1018
    with (
        make_client(sim, clock, flex_token, max_rate_waits=2) as client,
        pytest.raises(FlexRateLimited) as info,
    ):
        client.fetch(flex_query_id)
    assert info.value.code == 1018
    assert sim.count() == 3


# --- transient codes -------------------------------------------------------------------------

TRANSIENT = [1001, 1004, 1005, 1006, 1007, 1008, 1009, 1021]


@pytest.mark.parametrize("code", TRANSIENT)
def test_transient_code_on_send_request_retries_then_succeeds(
    sim, clock, flex_token, flex_query_id, code
):
    sim.faults.next_codes = [code, code]
    with make_client(sim, clock, flex_token, transient_backoff=5.0) as client:
        result = client.fetch(flex_query_id)

    assert [r.error_code for r in sim.requests] == [code, code, None, None]
    assert result.send_requests == 1 and result.requests == 4
    gaps = [b.at - a.at for a, b in zip(sim.requests[:3], sim.requests[1:3], strict=False)]
    assert gaps == [5.0, 10.0]  # growing back-off


@pytest.mark.parametrize("code", [1009, 1021])
def test_transient_code_on_get_statement_retries_same_reference(
    sim, clock, flex_token, flex_query_id, code
):
    sim.faults.next_get_codes = [code]
    with make_client(sim, clock, flex_token) as client:
        result = client.fetch(flex_query_id)
    gets = [r for r in sim.requests if r.endpoint == GET_STATEMENT]
    assert [r.error_code for r in gets] == [code, None]
    assert {r.query for r in gets} == {result.reference_code}
    assert sim.count(SEND_REQUEST) == 1


def test_transient_forever_raises_after_bounded_retries(sim, clock, flex_token, flex_query_id):
    sim.faults.fail_code = 1009
    with (
        make_client(sim, clock, flex_token, max_transient_retries=3) as client,
        pytest.raises(FlexTransientError) as info,
    ):
        client.fetch(flex_query_id)
    assert info.value.code == 1009
    assert ERROR_MESSAGES[1009] in str(info.value)
    assert sim.count() == 4


def test_http_503_page_is_retried(sim, clock, flex_token, flex_query_id, flex_statement):
    sim.faults.unavailable_next = 1
    with make_client(sim, clock, flex_token) as client:
        result = client.fetch(flex_query_id)
    assert result.content == flex_statement
    assert [r.http_status for r in sim.requests] == [503, 200, 200]


def test_connection_refused_raises_connection_error(clock, flex_token, flex_query_id):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}/AccountManagement/FlexWebService"
    client = FlexClient(flex_token, base_url=base, limiter=None, sleep=clock.sleep, clock=clock)
    with client, pytest.raises(FlexConnectionError, match="SendRequest"):
        client.fetch(flex_query_id)
    assert len(clock.sleeps) == client.max_transient_retries


# --- permanent codes -------------------------------------------------------------------------

PERMANENT = [
    (1003, FlexStatementNotAvailable),
    (1010, FlexLegacyQuery),
    (1011, FlexServiceInactive),
    (1012, FlexTokenExpired),
    (1013, FlexIPRestricted),
    (1014, FlexQueryInvalid),
    (1015, FlexTokenInvalid),
    (1016, FlexAccountInvalid),
    (1020, FlexInvalidRequest),
    (1025, FlexLockout),
]


@pytest.mark.parametrize(("code", "exc_type"), PERMANENT)
def test_permanent_code_raises_specific_error_after_one_request(
    sim, clock, flex_token, flex_query_id, code, exc_type
):
    sim.faults.next_codes = [code]
    with make_client(sim, clock, flex_token) as client, pytest.raises(exc_type) as info:
        client.fetch(flex_query_id)
    assert info.value.code == code
    assert f"error {code}: {ERROR_MESSAGES[code]}" in str(info.value)
    assert info.value.advice in str(info.value)
    assert sim.count() == 1


def test_permanent_code_on_get_statement_is_not_retried(sim, clock, flex_token, flex_query_id):
    sim.faults.next_get_codes = [1003]
    with make_client(sim, clock, flex_token) as client, pytest.raises(FlexStatementNotAvailable):
        client.fetch(flex_query_id)
    assert [r.endpoint for r in sim.requests] == [SEND_REQUEST, GET_STATEMENT]


@pytest.mark.parametrize(
    ("token", "query", "window", "exc_type"),
    [
        (OTHER_TOKEN, None, {}, FlexTokenInvalid),
        (EXPIRED_TOKEN, None, {}, FlexTokenExpired),
        (None, "12345", {}, FlexQueryInvalid),
        (
            None,
            None,
            {"from_date": date(2026, 1, 1), "to_date": date(2026, 1, 15)},
            FlexStatementNotAvailable,
        ),
    ],
)
def test_configuration_errors_from_real_simulator_paths(
    sim, clock, flex_token, flex_query_id, token, query, window, exc_type
):
    with make_client(sim, clock, token or flex_token) as client, pytest.raises(exc_type):
        client.fetch(query or flex_query_id, **window)
    assert sim.count() == 1


# --- 1017 ------------------------------------------------------------------------------------


def test_invalid_reference_restarts_with_new_send_request(
    sim, clock, flex_token, flex_query_id, flex_statement
):
    sim.faults.forget_next_references = 1
    with make_client(sim, clock, flex_token) as client:
        result = client.fetch(flex_query_id)

    assert result.content == flex_statement and result.send_requests == 2
    assert [(r.endpoint, r.error_code) for r in sim.requests] == [
        (SEND_REQUEST, None),
        (GET_STATEMENT, 1017),
        (SEND_REQUEST, None),
        (GET_STATEMENT, None),
    ]
    assert sim.requests[1].query != result.reference_code == sim.requests[3].query


def test_invalid_reference_forever_raises(sim, clock, flex_token, flex_query_id):
    sim.faults.forget_next_references = 100
    with (
        make_client(sim, clock, flex_token, max_reference_restarts=2) as client,
        pytest.raises(FlexReferenceCodeInvalid) as info,
    ):
        client.fetch(flex_query_id)
    assert info.value.code == 1017
    assert sim.count(SEND_REQUEST) == 3 and sim.count(GET_STATEMENT, 1017) == 3


# --- bad bodies ------------------------------------------------------------------------------


def test_truncated_statement_is_polled_again(sim, clock, flex_token, flex_query_id, flex_statement):
    sim.faults.truncate_next = 1
    with make_client(sim, clock, flex_token) as client:
        result = client.fetch(flex_query_id)
    assert result.content == flex_statement
    assert (sim.count(SEND_REQUEST), sim.count(GET_STATEMENT)) == (1, 2)


def test_truncated_statement_forever_raises_response_error(sim, clock, flex_token, flex_query_id):
    sim.faults.truncate_next = 100
    with (
        make_client(sim, clock, flex_token) as client,
        pytest.raises(FlexResponseError, match="truncated"),
    ):
        client.fetch(flex_query_id)
    assert (sim.count(SEND_REQUEST), sim.count(GET_STATEMENT)) == (1, 4)


def test_html_404_page_raises_clear_error(sim, clock, flex_token, flex_query_id):
    wrong = f"{sim.root_url}/Universal/servlet/FlexStatementService"
    with (
        make_client(sim, clock, flex_token, base_url=wrong) as client,
        pytest.raises(
            FlexResponseError, match=r"HTML page \(HTTP 404.*check the Flex Web Service URL"
        ),
    ):
        client.fetch(flex_query_id)
    assert [r.http_status for r in sim.requests] == [404]


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        (b'"ClientAccountID","Symbol"\n"U1234567","AAPL"\n', "non-XML body.*CSV"),
        (b"<Report><Row/></Report>", "unexpected XML root element <Report>"),
    ],
)
def test_non_statement_bodies_raise(flex_token, flex_query_id, clock, body, pattern):
    with FlexSimulator(
        lambda *_: body, flex_token, {flex_query_id}, rate_limits=LOOSE, clock=clock
    ) as other:
        with (
            make_client(other, clock, flex_token) as client,
            pytest.raises(FlexResponseError, match=pattern),
        ):
            client.fetch(flex_query_id)
        assert other.count(GET_STATEMENT) == 1


def test_follow_url_uses_envelope_url(sim, clock, flex_token, flex_query_id, flex_statement):
    client = make_client(
        sim,
        clock,
        flex_token,
        base_url=None,
        send_request_url=f"{sim.base_url}/SendRequest",
        get_statement_url="http://127.0.0.1:9/unused",
        follow_url=True,
    )
    with client:
        assert client.fetch(flex_query_id).content == flex_statement


# --- windows ---------------------------------------------------------------------------------


def test_split_range_windows_are_consecutive_and_bounded():
    start = date(2024, 1, 1)
    assert split_range(start, start) == [(start, start)]
    assert split_range(start, start + timedelta(days=364)) == [(start, start + timedelta(days=364))]
    assert split_range(start, start + timedelta(days=399)) == [
        (start, start + timedelta(days=364)),
        (start + timedelta(days=365), start + timedelta(days=399)),
    ]
    windows = split_range(date(2020, 2, 29), date(2024, 3, 1))
    assert windows[0][0] == date(2020, 2, 29) and windows[-1][1] == date(2024, 3, 1)
    for (_, prev_end), (next_start, _) in zip(windows, windows[1:], strict=False):
        assert next_start == prev_end + timedelta(days=1)
    assert all((hi - lo).days + 1 <= 365 for lo, hi in windows)
    with pytest.raises(ValueError, match="before start"):
        split_range(start, start - timedelta(days=1))


def test_fetch_range_over_400_days_sends_two_windows(sim, clock, flex_token, flex_query_id):
    with make_client(sim, clock, flex_token) as client:
        results = client.fetch_range(flex_query_id, date(2024, 1, 1), date(2025, 2, 3))

    sends = [(r.fd, r.td) for r in sim.requests if r.endpoint == SEND_REQUEST]
    assert sends == [("20240101", "20241230"), ("20241231", "20250203")]
    assert [(r.from_date, r.to_date) for r in results] == [
        (date(2024, 1, 1), date(2024, 12, 30)),
        (date(2024, 12, 31), date(2025, 2, 3)),
    ]


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"from_date": date(2025, 1, 1)}, "together"),
        ({"from_date": date(2025, 1, 2), "to_date": date(2025, 1, 1)}, "before"),
        ({"from_date": date(2024, 1, 1), "to_date": date(2024, 12, 31)}, "366 days"),
        ({"period_days": 0}, "1..365"),
        ({"period_days": 366}, "1..365"),
        (
            {"from_date": date(2025, 1, 1), "to_date": date(2025, 1, 1), "period_days": 3},
            "not both",
        ),
    ],
)
def test_invalid_windows_rejected_before_any_request(
    sim, clock, flex_token, flex_query_id, kwargs, pattern
):
    with make_client(sim, clock, flex_token) as client, pytest.raises(ValueError, match=pattern):
        client.fetch(flex_query_id, **kwargs)
    assert sim.count() == 0


# --- redaction -------------------------------------------------------------------------------


def _exception_texts(exc: BaseException) -> list[str]:
    texts = ["".join(traceback.format_exception(exc)), repr(exc), str(exc), repr(exc.args)]
    for linked in (exc.__cause__, exc.__context__):
        if linked is not None:
            texts += _exception_texts(linked)
    return texts


def test_token_never_leaks(sim, clock, flex_token, flex_query_id, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    sim.generation_polls = 1

    def attempt(token: str, base_url: str | None = None, **kw) -> None:
        client = make_client(sim, clock, token, base_url=base_url or sim.base_url, **kw)
        texts.append(repr(client))
        with client:
            try:
                result = client.fetch(flex_query_id)
            except FlexError as exc:
                texts.extend(_exception_texts(exc))
                texts.append(repr(pickle.loads(pickle.dumps(exc))))
            else:
                texts.append(repr(result))
                texts.append(
                    repr({k: v for k, v in dataclasses.asdict(result).items() if k != "content"})
                )

    attempt(flex_token)  # success with a 1019 poll
    attempt(OTHER_TOKEN)  # 1015 for a wrong token: that one must not leak either
    attempt(EXPIRED_TOKEN)  # 1012
    sim.faults.next_codes = [1009]
    attempt(flex_token)  # transient retry logged at WARNING
    sim.faults.fail_code = 1018
    attempt(flex_token, max_rate_waits=1)
    sim.faults.fail_code = None
    sim.faults.truncate_next = 1
    attempt(flex_token)
    attempt(flex_token, base_url=f"{sim.root_url}/nowhere")  # HTML 404
    attempt(flex_token, base_url="http://127.0.0.1:9/AccountManagement/FlexWebService")  # refused

    texts += [r.getMessage() for r in caplog.records]
    texts.append(caplog.text)
    texts.append(repr(sim.requests))
    texts.append(repr(sim))
    texts.append(repr(list(ratelimit._registry)))
    captured = capfd.readouterr()
    texts += [captured.out, captured.err]

    assert any(r.name == "httpx" and "t=***" in r.getMessage() for r in caplog.records)
    assert any(r.name.startswith("httpcore") for r in caplog.records)
    assert any(isinstance(t, str) and "Flex Web Service error 1015" in t for t in texts)
    for secret in (flex_token, OTHER_TOKEN, EXPIRED_TOKEN):
        leaks = [t for t in texts if secret in t]
        assert not leaks, leaks[:1]


def test_redact_helper():
    assert redact("GET ?t=123&q=9 token 123", "123") == "GET ?t=***&q=9 token ***"
    assert redact("nothing", "") == "nothing"


def test_errors_pickle_roundtrip():
    error = FlexTokenExpired(1012, ERROR_MESSAGES[1012], "query 1")
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is FlexTokenExpired and str(clone) == str(error) and clone.code == 1012
    assert isinstance(clone, FlexRequestError)


# --- response parser -------------------------------------------------------------------------


def test_parse_response_handles_envelope_quirks():
    legacy = (
        b'\xef\xbb\xbf<FlexStatementResponse timestamp="28 August, 2012 10:37 AM EDT">\n'
        b"<Status>Success</Status>\n<ReferenceCode>1234567890</ReferenceCode>\n"
        b"<url>\nhttps://gdcdyn.interactivebrokers.com/AccountManagement/FlexWebService/GetStatement\n</url>\n"
        b"</FlexStatementResponse>"
    )
    assert parse_response(legacy) == Envelope(
        "Success",
        reference_code="1234567890",
        url="https://gdcdyn.interactivebrokers.com/AccountManagement/FlexWebService/GetStatement",
    )
    warn = b"<FlexStatementResponse><Status>Warn</Status><ErrorCode>1019</ErrorCode><ErrorMessage>x</ErrorMessage></FlexStatementResponse>"
    assert parse_response(warn) == Envelope("Warn", code=1019, message="x")
    statement = b'<FlexQueryResponse queryName="q" type="AF"><FlexStatements count="0"/></FlexQueryResponse>'
    assert parse_response(statement) is statement
    with pytest.raises(FlexResponseError, match="no numeric ErrorCode"):
        parse_response(
            b"<FlexStatementResponse><Status>Fail</Status><code>boom</code></FlexStatementResponse>"
        )


def test_parse_response_reads_public_statements(public_flex_dir):
    for path in sorted(public_flex_dir.glob("*.xml")):
        body = path.read_bytes()
        assert parse_response(body) is body, path.name


# --- rate limiter ----------------------------------------------------------------------------


def test_rate_limiter_spaces_requests_one_per_second(clock):
    limiter = RateLimiter((RateLimit(1, 1.0),), margin_s=0.0, clock=clock, sleep=clock.sleep)
    admitted = [limiter.acquire() for _ in range(4)]
    assert [t - admitted[0] for t in admitted] == [0.0, 1.0, 2.0, 3.0]


def test_rate_limiter_enforces_ten_per_rolling_minute(clock):
    limiter = RateLimiter(IBKR_RATE_LIMITS, margin_s=0.0, clock=clock, sleep=clock.sleep)
    admitted = [limiter.acquire() - 1000.0 for _ in range(12)]
    assert admitted[:10] == [float(i) for i in range(10)]
    assert admitted[10:] == [60.0, 61.0]  # the 11th waits for the first to leave the window


def test_rate_limiter_delay_and_margin(clock):
    limiter = RateLimiter((RateLimit(2, 10.0),), margin_s=0.25, clock=clock, sleep=clock.sleep)
    assert limiter.delay() == 0.0
    limiter.acquire()
    clock.now += 3.0
    limiter.acquire()
    assert limiter.delay() == pytest.approx(7.25)
    assert limiter.acquire() == pytest.approx(1010.25)
    assert clock.sleeps == [pytest.approx(7.25)]


def test_rate_limiter_is_thread_safe():
    limiter = RateLimiter((RateLimit(3, 0.2),), margin_s=0.0)
    admitted: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        moment = limiter.acquire()
        with lock:
            admitted.append(moment)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    admitted.sort()
    assert len(admitted) == 10
    assert all(
        later - earlier >= 0.2 - 1e-9
        for earlier, later in zip(admitted, admitted[3:], strict=False)
    )
    assert time.monotonic() - started >= 0.6  # 10 requests at 3 per 0.2 s need three full windows


def test_shared_limiter_registry_never_holds_the_token(flex_token):
    first = shared_limiter(flex_token)
    assert shared_limiter(flex_token) is first
    assert all(flex_token not in key for key in ratelimit._registry)
    assert flex_token not in repr(first)


@pytest.mark.parametrize("bad", [(0, 1.0), (1, 0.0)])
def test_rate_limit_validation(bad):
    with pytest.raises(ValueError, match="invalid rate limit"):
        RateLimit(*bad)
