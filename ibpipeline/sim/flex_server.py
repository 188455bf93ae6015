"""A local simulator of IBKR's Flex Web Service, served over real HTTP on loopback.

Paths, parameters, envelopes and error codes follow the reference (flex-web-service.md §2-5, §7):
HTTP 200 envelopes without XML declaration and with a single-quoted timestamp; Status Success, Fail,
or Warn (1019); per-token rate limits over both endpoints counting rejected requests too; an HTML 404
page for unknown paths. Decisions not documented by IBKR, chosen here:

- missing ``User-Agent``, ``fd`` without ``td`` (or the reverse), unparseable dates, ``td < fd``,
  a window over 365 days (both ends count), ``p`` outside 1..365 and ``v`` other than 2/3 -> 1020
  (the reference lists 1003 and 1020 as observed candidates for the 365-day violation; 1020 is the
  "invalid request" code, 1003 is kept for data not yet published);
- ``td`` on or after the simulator's ``today`` -> 1003 (data is published at close of business);
- ``p`` together with ``fd``/``td`` is ignored (as reported for IBKR);
- a missing or unknown token -> 1015, a token listed in ``expired_tokens`` -> 1012;
- several queries (``query_tokens``): each query id belongs to one token; a SendRequest for a
  query of another token -> 1014, a GetStatement of another token's reference code -> 1017.

The token is never logged or recorded; the request log keeps only non-secret fields.
"""

from __future__ import annotations

import logging
import secrets
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from ibpipeline.flex.errors import (
    ERROR_MESSAGES,
    NOT_READY_CODE,
    RATE_LIMIT_CODE,
    redact_url_token,
)
from ibpipeline.flex.ratelimit import IBKR_RATE_LIMITS, RateLimit, token_key, wait_needed

StatementSource = Callable[[str, date | None, date | None, int | None], bytes]
"""``(query_id, from_date, to_date, period_days) -> Flex XML bytes``; dates None unless fd/td given,
``period_days`` None unless ``p`` given (and no fd/td)."""

SERVICE_PATH = "/AccountManagement/FlexWebService"
SEND_REQUEST = "SendRequest"
GET_STATEMENT = "GetStatement"
MAX_WINDOW_DAYS = 365
XML_CONTENT_TYPE = "text/xml;charset=UTF-8"
HTML_CONTENT_TYPE = "text/html;charset=UTF-8"
_ENDPOINTS = {f"{SERVICE_PATH}/{name}": name for name in (SEND_REQUEST, GET_STATEMENT)}

_log = logging.getLogger(__name__)
_NEW_YORK = ZoneInfo("America/New_York")
_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip
_NOT_FOUND_HTML = (
    b'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    b"<title>404 Page Not Found | Interactive Brokers</title>\n</head>\n<body>\n"
    b"<h1>404 Page Not Found</h1>\n<p>The page you requested could not be found.</p>\n"
    b"</body>\n</html>\n"
)

_UNAVAILABLE_HTML = (
    b"<html><head><title>503 Service Unavailable</title></head><body></body></html>\n"
)


def ibkr_timestamp(moment: datetime) -> str:
    """``'28 August, 2012 10:37 AM EDT'`` style timestamp of ``moment`` in New York time."""
    local = moment.astimezone(_NEW_YORK)
    return (
        f"{local.day:02d} {_MONTHS[local.month - 1]}, {local.year} "
        f"{local.strftime('%I:%M %p')} {local.tzname()}"
    )


def envelope(
    status: str,
    moment: datetime,
    *,
    code: int | None = None,
    reference_code: str | None = None,
    url: str | None = None,
    message: str | None = None,
) -> bytes:
    """A ``FlexStatementResponse`` exactly as IBKR writes it (no XML declaration, single quotes).

    ``message`` replaces IBKR's ErrorMessage of ``code`` (XML-escaped here).
    """
    lines = [
        f"<FlexStatementResponse timestamp='{ibkr_timestamp(moment)}'>",
        f"<Status>{status}</Status>",
    ]
    if code is not None:
        lines += [
            f"<ErrorCode>{code}</ErrorCode>",
            f"<ErrorMessage>{escape(message or ERROR_MESSAGES.get(code, 'Unknown error.'))}"
            "</ErrorMessage>",
        ]
    if reference_code is not None:
        lines.append(f"<ReferenceCode>{reference_code}</ReferenceCode>")
    if url is not None:
        lines.append(f"<Url>{url}</Url>")
    lines.append("</FlexStatementResponse>")
    return ("\n".join(lines) + "\n").encode()


def last_business_day_before(day: date) -> date:
    """The latest Monday-Friday strictly before ``day``."""
    previous = day - timedelta(days=1)
    while previous.weekday() >= 5:
        previous -= timedelta(days=1)
    return previous


@dataclass
class FlexFaults:
    """Fault injection, settable while the server runs.

    ``next_codes`` are served (in order, one per request) on the next requests to either endpoint
    that pass the token check; ``next_get_codes`` likewise on GetStatement only; ``fail_code``
    answers every such request until cleared; ``truncate_next`` cuts the next N statement bodies in
    half; ``forget_next_references`` issues N reference codes the server then does not know (1017);
    ``unavailable_next`` answers the next N requests with an HTML "HTTP 503" page (a proxy outage);
    ``echo_token`` makes every Fail/Warn envelope's ErrorMessage echo the request path and the
    token (as a misconfigured proxy or service might).
    """

    next_codes: list[int] = field(default_factory=list)
    next_get_codes: list[int] = field(default_factory=list)
    fail_code: int | None = None
    truncate_next: int = 0
    forget_next_references: int = 0
    unavailable_next: int = 0
    echo_token: bool = False


@dataclass(frozen=True)
class FlexRequestRecord:
    """One request as the simulator saw it (no token). ``query`` is the query id on SendRequest and
    the reference code on GetStatement; ``status`` is Success/Fail/Warn, ``Statement`` when the XML
    statement was served, ``NotFound`` for unknown paths, ``Unavailable`` for an injected 503; ``at`` is the simulator clock (seconds)."""

    endpoint: str
    query: str | None
    fd: str | None
    td: str | None
    p: str | None
    v: str | None
    user_agent: str | None
    http_status: int
    status: str
    error_code: int | None
    at: float
    received_at: datetime


@dataclass
class _Reference:
    token_key: str
    query_id: str
    from_date: date | None
    to_date: date | None
    period_days: int | None
    issued_at: float
    polls: int = 0
    content: bytes | None = None


@dataclass(frozen=True)
class _Reply:
    http_status: int
    body: bytes
    content_type: str
    status: str
    error_code: int | None = None


class _Handler(BaseHTTPRequestHandler):
    server_version = "FlexWebServiceSimulator"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self.server.simulator._handle(self)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server signature)
        _log.debug("%s %s", self.address_string(), redact_url_token(format % args))


class FlexSimulator:
    """Flex Web Service on ``host:port`` (port 0 = any free port) serving ``statement_source``.

    ``generation_polls`` 1019 answers precede each reference code's statement. ``rate_limits``
    apply per token over both endpoints (rejected requests count too). References expire after
    ``reference_ttl_s``. With ``lockout_after`` set, that many consecutive Fail answers on a token
    lock it (1025) for ``lockout_s``, and every request during the lockout extends it. ``today``
    decides which data is published; ``clock`` (seconds) drives rate limits, TTLs and lockouts.
    ``query_tokens`` (query id -> token) serves several queries, each for its own token (or a
    shared one); queries of ``query_ids`` not listed there belong to ``token``.
    """

    def __init__(
        self,
        statement_source: StatementSource,
        token: str,
        query_ids: Iterable[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        generation_polls: int = 0,
        rate_limits: Sequence[RateLimit] = IBKR_RATE_LIMITS,
        expired_tokens: Iterable[str] = (),
        reference_ttl_s: float = 3600.0,
        lockout_after: int | None = None,
        lockout_s: float = 3600.0,
        today: Callable[[], date] = date.today,
        clock: Callable[[], float] = time.monotonic,
        query_tokens: Mapping[str, str] | None = None,
    ) -> None:
        if not token or not all((query_tokens or {}).values()):
            raise ValueError("the simulator needs non-empty tokens")
        self._source = statement_source
        self._token = token
        self._expired = frozenset(expired_tokens)
        self.query_ids = frozenset(str(q) for q in (*query_ids, *(query_tokens or {})))
        self._query_tokens = {str(q): t for q, t in (query_tokens or {}).items()}
        self._tokens = frozenset({token, *self._query_tokens.values()})
        self.host = host
        self._requested_port = port
        self.generation_polls = generation_polls
        self.rate_limits = tuple(rate_limits)
        self.reference_ttl_s = reference_ttl_s
        self.lockout_after = lockout_after
        self.lockout_s = lockout_s
        self.faults = FlexFaults()
        self._today = today
        self._clock = clock
        self._lock = threading.Lock()
        self._log: list[FlexRequestRecord] = []
        self._references: dict[str, _Reference] = {}
        self._rate_history: dict[str, deque[float]] = {}
        self._failures: dict[str, int] = {}
        self._locked_until: dict[str, float] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        where = self.base_url if self._server else "not started"
        return f"FlexSimulator({where}, queries={sorted(self.query_ids)})"

    # lifecycle -------------------------------------------------------------------------------

    def start(self) -> FlexSimulator:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError("FlexSimulator already started")
        server = ThreadingHTTPServer((self.host, self._requested_port), _Handler)
        server.daemon_threads = True
        server.simulator = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="flex-sim",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FlexSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port (after ``start``)."""
        if self._server is None:
            raise RuntimeError("FlexSimulator is not started")
        return self._server.server_address[1]

    @property
    def root_url(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://host:port/AccountManagement/FlexWebService`` (append /SendRequest, /GetStatement)."""
        return f"{self.root_url}{SERVICE_PATH}"

    @property
    def requests(self) -> list[FlexRequestRecord]:
        """A copy of the request log, oldest first."""
        with self._lock:
            return list(self._log)

    def count(
        self, endpoint: str | None = None, error_code: int | None = None, query: str | None = None
    ) -> int:
        """Number of logged requests, optionally only of ``endpoint``, with ``error_code`` and/or
        with ``q`` = ``query`` (a query id on SendRequest)."""
        return sum(
            1
            for r in self.requests
            if (endpoint is None or r.endpoint == endpoint)
            and (error_code is None or r.error_code == error_code)
            and (query is None or r.query == query)
        )

    def token_of(self, query_id: str) -> str:
        """The token a query id belongs to."""
        return self._query_tokens.get(query_id, self._token)

    # request handling ------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        now = self._clock()
        split = urlsplit(handler.path)
        params = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        user_agent = handler.headers.get("User-Agent")
        endpoint = _ENDPOINTS.get(split.path, "other")
        with self._lock:
            unavailable = self.faults.unavailable_next > 0
            if unavailable:
                self.faults.unavailable_next -= 1
        if unavailable:
            reply = _Reply(503, _UNAVAILABLE_HTML, HTML_CONTENT_TYPE, "Unavailable")
        elif endpoint != "other":
            key = token_key(params.get("t", ""))
            with self._lock:
                decided = self._decide(endpoint, params, key, user_agent, now)
            reply = self._deliver(decided, key) if isinstance(decided, _Reference) else decided
        else:
            reply = _Reply(404, _NOT_FOUND_HTML, HTML_CONTENT_TYPE, "NotFound")
        if self.faults.echo_token and reply.error_code is not None:
            echoed = (
                f"{ERROR_MESSAGES.get(reply.error_code, 'Unknown error.')} Request "
                f"{handler.path} with token {params.get('t', '')}"
            )
            body = envelope(reply.status, datetime.now(UTC), code=reply.error_code, message=echoed)
            reply = replace(reply, body=body)
        record = FlexRequestRecord(
            endpoint=endpoint,
            query=params.get("q"),
            fd=params.get("fd"),
            td=params.get("td"),
            p=params.get("p"),
            v=params.get("v"),
            user_agent=user_agent,
            http_status=reply.http_status,
            status=reply.status,
            error_code=reply.error_code,
            at=now,
            received_at=datetime.now(UTC),
        )
        with self._lock:
            self._log.append(record)
        handler.send_response(reply.http_status)
        handler.send_header("Content-Type", reply.content_type)
        handler.send_header("Content-Length", str(len(reply.body)))
        handler.end_headers()
        handler.wfile.write(reply.body)

    def _decide(
        self, endpoint: str, params: dict[str, str], key: str, user_agent: str | None, now: float
    ) -> _Reply | _Reference:
        """Everything but rendering; called with the lock held. ``key`` is the token's hash."""
        token = params.get("t", "")
        history = self._rate_history.setdefault(key, deque())
        horizon = max((limit.window_s for limit in self.rate_limits), default=0.0)
        while history and history[0] <= now - horizon:
            history.popleft()
        limited = wait_needed(history, self.rate_limits, now) > 0
        history.append(now)
        if limited:
            return self._fail(RATE_LIMIT_CODE, key, now)
        if now < self._locked_until.get(key, float("-inf")):
            self._locked_until[key] = now + self.lockout_s
            return self._fail(1025, key, now)
        if not user_agent:
            return self._fail(1020, key, now)
        if token in self._expired:
            return self._fail(1012, key, now)
        if token not in self._tokens:
            return self._fail(1015, key, now)
        injected = self._injected_code(endpoint)
        if injected is not None:
            return self._fail(injected, key, now)
        if params.get("v", "2") not in ("2", "3"):
            return self._fail(1020, key, now)
        if endpoint == SEND_REQUEST:
            return self._send_request(params, key, now)
        return self._get_statement(params, key, now)

    def _injected_code(self, endpoint: str) -> int | None:
        faults = self.faults
        if faults.fail_code is not None:
            return faults.fail_code
        if faults.next_codes:
            return faults.next_codes.pop(0)
        if endpoint == GET_STATEMENT and faults.next_get_codes:
            return faults.next_get_codes.pop(0)
        return None

    def _send_request(self, params: dict[str, str], key: str, now: float) -> _Reply:
        query_id = params.get("q", "")
        if query_id not in self.query_ids or self.token_of(query_id) != params.get("t"):
            return self._fail(1014, key, now)
        window = self._window(params)
        if isinstance(window, int):
            return self._fail(window, key, now)
        reference_code = str(1_000_000_000 + secrets.randbelow(9_000_000_000))
        if self.faults.forget_next_references > 0:
            self.faults.forget_next_references -= 1
        else:
            self._references[reference_code] = _Reference(key, query_id, *window, issued_at=now)
        self._failures[key] = 0
        body = envelope(
            "Success",
            datetime.now(UTC),
            reference_code=reference_code,
            url=f"{self.base_url}/{GET_STATEMENT}",
        )
        return _Reply(200, body, XML_CONTENT_TYPE, "Success")

    def _window(self, params: dict[str, str]) -> tuple[date | None, date | None, int | None] | int:
        """``(from_date, to_date, period_days)`` of a SendRequest, or the error code to answer."""
        fd, td, p = params.get("fd"), params.get("td"), params.get("p")
        if (fd is None) != (td is None):
            return 1020
        if fd is not None and td is not None:
            try:
                from_date = datetime.strptime(fd, "%Y%m%d").date()
                to_date = datetime.strptime(td, "%Y%m%d").date()
            except ValueError:
                return 1020
            if to_date < from_date or (to_date - from_date).days + 1 > MAX_WINDOW_DAYS:
                return 1020
            if to_date >= self._today():
                return 1003
            return from_date, to_date, None
        if p is not None:
            if not p.isdigit() or not 1 <= int(p) <= MAX_WINDOW_DAYS:
                return 1020
            return None, None, int(p)
        return None, None, None

    def _get_statement(self, params: dict[str, str], key: str, now: float) -> _Reply | _Reference:
        reference_code = params.get("q", "")
        reference = self._references.get(reference_code)
        if reference is not None and now - reference.issued_at > self.reference_ttl_s:
            del self._references[reference_code]
            reference = None
        if reference is None or reference.token_key != key:
            return self._fail(1017, key, now)
        if reference.polls < self.generation_polls:
            reference.polls += 1
            return self._fail(NOT_READY_CODE, key, now)
        self._failures[key] = 0
        return reference

    def _deliver(self, reference: _Reference, key: str) -> _Reply:
        """Render (once per reference, outside the lock) and serve the statement."""
        content = reference.content
        if content is None:
            try:
                content = self._source(
                    reference.query_id,
                    reference.from_date,
                    reference.to_date,
                    reference.period_days,
                )
            except Exception:
                _log.exception("statement source failed for query %s", reference.query_id)
                with self._lock:
                    return self._fail(1001, key, self._clock())
            reference.content = content
        with self._lock:
            truncate = self.faults.truncate_next > 0
            if truncate:
                self.faults.truncate_next -= 1
        body = content[: len(content) // 2] if truncate else content
        return _Reply(200, body, XML_CONTENT_TYPE, "Statement")

    def _fail(self, code: int, key: str, now: float) -> _Reply:
        """A Fail envelope (Warn for 1019); counts toward the token's lockout except 1018/1019."""
        status = "Warn" if code == NOT_READY_CODE else "Fail"
        if code not in (NOT_READY_CODE, RATE_LIMIT_CODE) and self.lockout_after is not None:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            if failures >= self.lockout_after:
                self._locked_until[key] = now + self.lockout_s
        body = envelope(status, datetime.now(UTC), code=code)
        return _Reply(200, body, XML_CONTENT_TYPE, status, code)


def world_statement_source(
    world: Any,
    date_format: str = "yyyyMMdd",
    today: Callable[[], date] = date.today,
    quirks: Any = None,
    accounts_by_query: Mapping[str, Sequence[str]] | None = None,
) -> StatementSource:
    """A ``StatementSource`` rendering every account of ``world`` with
    ``ibpipeline.sim.flex_statement.render_statement`` (``quirks``: its ``StatementQuirks``), or,
    with ``accounts_by_query`` (query id -> account ids), only the accounts of the query asked for.

    Windows: ``fd``/``td`` as given; ``p`` = the ``p`` calendar days before ``today`` (both with
    ``period=""``, as IBKR marks overrides); neither = the last business day before ``today``
    (``period="LastBusinessDay"``).
    """

    def source(
        query_id: str, from_date: date | None, to_date: date | None, period_days: int | None
    ) -> bytes:
        from ibpipeline.sim.flex_statement import render_statement

        period = ""
        if from_date is None or to_date is None:
            now = today()
            if period_days is not None:
                from_date, to_date = now - timedelta(days=period_days), now - timedelta(days=1)
            else:
                from_date = to_date = last_business_day_before(now)
                period = "LastBusinessDay"
        account_ids = [account.account_id for account in world.accounts]
        if accounts_by_query is not None:
            account_ids = list(accounts_by_query[query_id])
        return render_statement(
            world,
            account_ids,
            from_date,
            to_date,
            date_format=date_format,
            period=period,
            quirks=quirks,
        )

    return source


ACCOUNT_LAYOUTS = ("round_robin", "blocks")


def split_accounts(
    account_ids: Sequence[str], parts: int, layout: str = "round_robin"
) -> list[list[str]]:
    """``account_ids`` split over ``parts`` disjoint, non-empty lists: ``round_robin`` (account i
    to part i mod parts) or ``blocks`` (contiguous runs, the first ones one longer). Raises
    ValueError when there are fewer accounts than parts or the layout is unknown."""
    if layout not in ACCOUNT_LAYOUTS:
        raise ValueError(f"account layout must be one of {ACCOUNT_LAYOUTS}, got {layout!r}")
    if not 1 <= parts <= len(account_ids):
        raise ValueError(f"cannot split {len(account_ids)} accounts over {parts} queries")
    if layout == "round_robin":
        return [list(account_ids[i::parts]) for i in range(parts)]
    size, extra = divmod(len(account_ids), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (i < extra)
        out.append(list(account_ids[start:end]))
        start = end
    return out


@dataclass(frozen=True)
class SimQuery:
    """One query the simulator serves: its id, token and accounts."""

    query_id: str
    token: str
    accounts: tuple[str, ...]


def sim_queries(
    account_ids: Sequence[str],
    first_query_id: str,
    tokens: Sequence[str],
    count: int = 1,
    layout: str = "round_robin",
) -> list[SimQuery]:
    """``count`` queries over disjoint accounts, ids ``first_query_id``, +1, +2, ...; ``tokens``
    has one token per query, or one shared by all. Raises ValueError otherwise."""
    if len(tokens) not in (1, count) or not all(tokens):
        raise ValueError(f"need 1 token (shared) or {count} tokens (one per query)")
    if count > 1 and not first_query_id.isdigit():
        raise ValueError(f"query id {first_query_id!r} must be digits to number several queries")
    ids = [first_query_id] if count == 1 else [str(int(first_query_id) + i) for i in range(count)]
    parts = split_accounts(account_ids, count, layout)
    return [
        SimQuery(q, tokens[i % len(tokens)], tuple(accts))
        for i, (q, accts) in enumerate(zip(ids, parts, strict=True))
    ]


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_flex_simulator(
    host: str,
    port: int,
    token: str,
    query_id: str,
    seed: int,
    accounts: int,
    inception: date,
    date_format: str = "yyyyMMdd",
    generation_polls: int = 0,
    quirks: str = "",
    fx_commission_in_base: bool = False,
    rate_limited: bool = True,
    life_events: bool = False,
    queries: int = 1,
    tokens: Sequence[str] = (),
    layout: str = "round_robin",
) -> None:
    """``ibpipeline sim flex``: serve a seeded World's statements until Ctrl-C.

    ``quirks``: a ``flex_statement.parse_quirks`` spec; ``fx_commission_in_base`` and
    ``life_events`` (``position_events``): the World options; ``rate_limited=False`` drops IBKR's
    per-token limits (benchmarks). ``queries`` > 1 serves that many queries (ids ``query_id``,
    +1, ...) over disjoint accounts (``layout``, see ``split_accounts``), with ``tokens`` one per
    query or ``token`` shared by all; one line per query is printed before the "listening" line.
    """
    from ibpipeline.sim.flex_statement import parse_quirks
    from ibpipeline.world import World

    world = World(
        seed=seed,
        n_accounts=accounts,
        inception=inception,
        fx_commission_in_base=fx_commission_in_base,
        position_events=life_events,
    )
    account_ids = [a.account_id for a in world.accounts]
    served = sim_queries(account_ids, query_id, list(tokens) or [token], queries, layout)
    simulator = FlexSimulator(
        world_statement_source(
            world,
            date_format,
            quirks=parse_quirks(quirks),
            accounts_by_query={q.query_id: q.accounts for q in served} if queries > 1 else None,
        ),
        token,
        {query_id},
        host=host,
        port=port,
        generation_polls=generation_polls,
        query_tokens={q.query_id: q.token for q in served},
        **({} if rate_limited else {"rate_limits": ()}),
    )
    token_numbers = {t: i for i, t in enumerate(dict.fromkeys(q.token for q in served), start=1)}
    with simulator:
        stop = threading.Event()
        # SIGINT and SIGTERM stop it, also when it was started with SIGINT ignored (a background
        # job of a non-interactive shell, a test runner's worker), where Ctrl-C never raises;
        # installed before the "listening" line, which tells callers it is ready
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS}
        if queries > 1:
            for q in served:
                print(
                    f"query {q.query_id}: token #{token_numbers[q.token]}, "
                    f"{len(q.accounts)} accounts {', '.join(q.accounts)}",
                    flush=True,
                )
        ids = ", ".join(q.query_id for q in served)
        print(
            f"Flex simulator listening on {simulator.base_url} "
            f"(query id{'s' if queries > 1 else ''} {ids}, {len(world.accounts)} accounts)",
            flush=True,
        )
        try:
            while not stop.wait(0.5):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        print("Flex simulator stopped", flush=True)
