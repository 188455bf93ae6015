"""Synchronous client of IBKR's Flex Web Service (SendRequest -> poll GetStatement).

Reactions per ErrorCode follow the reference (docs: flex-web-service.md §1.1): 1019 polls the same
reference code with growing intervals until ``poll_deadline``; 1018 waits ``rate_wait_s`` and repeats
the call; transient codes (1001, 1004-1009, 1021), network errors and HTTP 5xx retry with growing
back-off a bounded number of times, and so does a GetStatement body cut short (the same reference
code is polled again); 1017 starts again with a new SendRequest (bounded); every other
code raises its specific ``FlexRequestError`` subclass at once. The token never appears in logs,
exceptions, reprs or returned metadata: every text taken from a response (ErrorMessage, parser
errors, httpx errors) is redacted before it is raised or logged, as a proxy may echo the request.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import httpx
from lxml import etree

from ibpipeline.flex.errors import (
    NOT_READY_CODE,
    RATE_LIMIT_CODE,
    REFERENCE_INVALID_CODE,
    TRANSIENT_CODES,
    FlexConnectionError,
    FlexError,
    FlexReferenceCodeInvalid,
    FlexResponseError,
    FlexStatementTimeout,
    FlexTruncatedResponse,
    error_for_code,
    redact,
    redact_url_token,
)
from ibpipeline.flex.ratelimit import RateLimiter, shared_limiter

DEFAULT_SEND_REQUEST_URL = (
    "https://ndcdyn.interactivebrokers.com/AccountManagement/FlexWebService/SendRequest"
)
DEFAULT_GET_STATEMENT_URL = (
    "https://gdcdyn.interactivebrokers.com/AccountManagement/FlexWebService/GetStatement"
)
DEFAULT_USER_AGENT = f"ibpipeline/0.1 Python/{sys.version_info.major}.{sys.version_info.minor}"
MAX_WINDOW_DAYS = 365
STATEMENT_ROOT = "FlexQueryResponse"
ENVELOPE_ROOT = "FlexStatementResponse"

_log = logging.getLogger(__name__)
_XML_OPTIONS = {"resolve_entities": False, "no_network": True, "load_dtd": False, "huge_tree": True}
_XML_PARSER = etree.XMLParser(**_XML_OPTIONS)
_FEED_BYTES = 1 << 20


class _RedactTokenParam(logging.Filter):
    """Rewrites ``t=<token>`` in records of the ``httpx`` logger (it logs full request URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_url_token(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def _install_httpx_log_filter() -> None:
    httpx_logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactTokenParam) for f in httpx_logger.filters):
        httpx_logger.addFilter(_RedactTokenParam())


_install_httpx_log_filter()


@dataclass(frozen=True)
class Envelope:
    """A ``FlexStatementResponse``: ``status`` Success/Fail/Warn; ``code`` None on Success."""

    status: str
    code: int | None = None
    message: str = ""
    reference_code: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class FlexStatementResult:
    """One downloaded Flex XML statement and how it was obtained (never holds the token).

    ``from_date``/``to_date``/``period_days`` echo the request (None when the query's own period
    was used); ``requests`` counts HTTP requests over both endpoints including retries;
    ``send_requests`` counts SendRequests (more than 1 after 1017 restarts or retries).
    """

    content: bytes = field(repr=False)
    query_id: str
    reference_code: str
    from_date: date | None
    to_date: date | None
    period_days: int | None
    requests: int
    send_requests: int
    not_ready_polls: int
    fetched_at: datetime

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of ``content``."""
        return hashlib.sha256(self.content).hexdigest()


@dataclass
class _Stats:
    requests: int = 0
    send_requests: int = 0
    not_ready_polls: int = 0


def parse_response(body: bytes, http_status: int = 200, content_type: str = "") -> bytes | Envelope:
    """Classify a Flex Web Service body: the statement bytes (root ``FlexQueryResponse``) or an
    ``Envelope``. Raises ``FlexResponseError`` for HTML pages, non-XML (CSV/TEXT query output),
    truncated/malformed XML (``FlexTruncatedResponse``) and any other root element."""
    head = body[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if "html" in content_type.lower() or head.startswith((b"<!doctype html", b"<html")):
        raise FlexResponseError(
            f"got an HTML page (HTTP {http_status}, {len(body)} bytes) instead of Flex XML: "
            "check the Flex Web Service URLs (SendRequest/GetStatement)"
        )
    if not head.startswith(b"<"):
        raise FlexResponseError(
            f"got a non-XML body (HTTP {http_status}, {len(body)} bytes): a Flex query whose "
            "output format is CSV or TEXT returns that format; set the query's format to XML"
        )
    try:
        if _root_tag(body) == STATEMENT_ROOT:
            _check_well_formed(body)  # a statement can be GBs: never build its tree
            return body
        root = etree.fromstring(body, _XML_PARSER)
    except etree.XMLSyntaxError as exc:
        raise FlexTruncatedResponse(
            f"got truncated or malformed XML (HTTP {http_status}, {len(body)} bytes): {exc}"
        ) from None
    if root.tag == STATEMENT_ROOT:
        return body
    if root.tag == ENVELOPE_ROOT:
        return _envelope(root)
    raise FlexResponseError(
        f"unexpected XML root element <{root.tag}> (HTTP {http_status}); expected "
        f"{STATEMENT_ROOT} or {ENVELOPE_ROOT}"
    )


class _RootFound(Exception):
    def __init__(self, tag: str) -> None:
        self.tag = tag


class _RootTarget:
    """lxml parser target stopping the parse at the first (root) element."""

    def start(self, tag: str, attrib: dict) -> None:
        raise _RootFound(tag)

    def close(self) -> None:
        return None


class _SyntaxOnly:
    """lxml parser target with no element callbacks: the document is tokenized and checked for
    well-formedness, no element, attribute dict or tree is made."""

    def close(self) -> None:
        return None


def _feed(parser: etree.XMLParser, body: bytes) -> None:
    view = memoryview(body)
    for i in range(0, len(view), _FEED_BYTES):
        parser.feed(bytes(view[i : i + _FEED_BYTES]))
    parser.close()


def _root_tag(body: bytes) -> str | None:
    """The root element's tag (as ``etree.fromstring(body).tag`` spells it), reading only up to
    it; None when the document has no element. Raises ``etree.XMLSyntaxError`` for a syntax
    error before the root element."""
    try:
        _feed(etree.XMLParser(target=_RootTarget(), **_XML_OPTIONS), body)
    except _RootFound as found:
        return found.tag
    return None


def _check_well_formed(body: bytes) -> None:
    """Raise ``etree.XMLSyntaxError`` (same message as ``fromstring``) unless ``body`` is
    well-formed XML, in bounded memory: fed in 1 MiB chunks to a target without callbacks."""
    _feed(etree.XMLParser(target=_SyntaxOnly(), **_XML_OPTIONS), body)


def _envelope(root: etree._Element) -> Envelope:
    children = {str(child.tag).lower(): (child.text or "").strip() for child in root}
    status = children.get("status", "")
    code_text = children.get("errorcode", "")
    if status == "Success":
        return Envelope(
            status, reference_code=children.get("referencecode"), url=children.get("url")
        )
    if not code_text.isdigit():
        raise FlexResponseError(
            f"{ENVELOPE_ROOT} with Status {status!r} has no numeric ErrorCode "
            f"(message: {children.get('errormessage') or children.get('code', '')!r})"
        )
    return Envelope(status, code=int(code_text), message=children.get("errormessage", ""))


def split_range(start: date, end: date, max_days: int = MAX_WINDOW_DAYS) -> list[tuple[date, date]]:
    """Consecutive, non-overlapping inclusive windows of at most ``max_days`` days covering
    ``start..end`` (both ends count)."""
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    windows = []
    while start <= end:
        window_end = min(start + timedelta(days=max_days - 1), end)
        windows.append((start, window_end))
        start = window_end + timedelta(days=1)
    return windows


def _validate_window(from_date: date | None, to_date: date | None, period_days: int | None) -> None:
    if (from_date is None) != (to_date is None):
        raise ValueError("from_date and to_date must be given together")
    if from_date is not None and period_days is not None:
        raise ValueError("give either from_date/to_date or period_days, not both")
    if from_date is not None and to_date is not None:
        if to_date < from_date:
            raise ValueError(f"to_date {to_date} is before from_date {from_date}")
        days = (to_date - from_date).days + 1
        if days > MAX_WINDOW_DAYS:
            raise ValueError(
                f"{from_date}..{to_date} spans {days} days; the Flex Web Service allows at most "
                f"{MAX_WINDOW_DAYS} (use fetch_range)"
            )
    if period_days is not None and not 1 <= period_days <= MAX_WINDOW_DAYS:
        raise ValueError(f"period_days must be within 1..{MAX_WINDOW_DAYS}, got {period_days}")


class FlexClient:
    """Fetches Activity Flex statements for one token.

    Times are seconds. ``base_url`` (e.g. ``http://127.0.0.1:8000/AccountManagement/FlexWebService``)
    overrides both endpoint URLs. ``limiter="shared"`` uses the process-wide limiter of the token
    (1 request/s, 10/min); pass a ``RateLimiter`` of your own, or None to disable client-side limiting.
    ``follow_url`` sends GetStatement to the ``<Url>`` of the SendRequest envelope when it has one.
    """

    def __init__(
        self,
        token: str,
        *,
        base_url: str | None = None,
        send_request_url: str = DEFAULT_SEND_REQUEST_URL,
        get_statement_url: str = DEFAULT_GET_STATEMENT_URL,
        follow_url: bool = False,
        version: int = 3,
        user_agent: str = DEFAULT_USER_AGENT,
        timeout: float = 60.0,
        first_poll_delay: float = 5.0,
        poll_interval: float = 5.0,
        poll_backoff: float = 1.5,
        max_poll_interval: float = 30.0,
        poll_deadline: float = 600.0,
        rate_wait_s: float = 60.0,
        max_rate_waits: int = 3,
        transient_backoff: float = 5.0,
        max_transient_retries: int = 3,
        max_reference_restarts: int = 2,
        limiter: RateLimiter | None | Literal["shared"] = "shared",
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        if not token:
            raise ValueError("a Flex Web Service token is required")
        if base_url is not None:
            send_request_url = f"{base_url.rstrip('/')}/SendRequest"
            get_statement_url = f"{base_url.rstrip('/')}/GetStatement"
        self._token = token
        self.send_request_url = send_request_url
        self.get_statement_url = get_statement_url
        self.follow_url = follow_url
        self.version = version
        self.first_poll_delay = first_poll_delay
        self.poll_interval = poll_interval
        self.poll_backoff = poll_backoff
        self.max_poll_interval = max_poll_interval
        self.poll_deadline = poll_deadline
        self.rate_wait_s = rate_wait_s
        self.max_rate_waits = max_rate_waits
        self.transient_backoff = transient_backoff
        self.max_transient_retries = max_transient_retries
        self.max_reference_restarts = max_reference_restarts
        self.limiter = shared_limiter(token) if limiter == "shared" else limiter
        self._sleep = sleep
        self._clock = clock
        self._log = logger or _log
        self._http = httpx.Client(headers={"User-Agent": user_agent}, timeout=timeout)

    def __repr__(self) -> str:
        return (
            f"FlexClient(token='***', send_request_url={self.send_request_url!r}, "
            f"get_statement_url={self.get_statement_url!r})"
        )

    def __enter__(self) -> FlexClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying HTTP connections."""
        self._http.close()

    def fetch(
        self,
        query_id: str,
        from_date: date | None = None,
        to_date: date | None = None,
        period_days: int | None = None,
        query_name: str | None = None,
    ) -> FlexStatementResult:
        """Download one statement of ``query_id``: for ``from_date..to_date`` (inclusive, at most
        365 days), for the last ``period_days`` days (1..365), or for the query's saved period.
        ``query_name`` (when several queries are configured) names the query in logs and errors.

        Raises ValueError for an invalid window, ``FlexError`` subclasses for service failures.
        """
        _validate_window(from_date, to_date, period_days)
        query_id = str(query_id)
        params = {"q": query_id, "v": str(self.version)}
        if from_date is not None and to_date is not None:
            params |= {"fd": from_date.strftime("%Y%m%d"), "td": to_date.strftime("%Y%m%d")}
        if period_days is not None:
            params["p"] = str(period_days)
        label = f"query {query_name} (id {query_id})" if query_name else f"query {query_id}"
        context = label + (f" {params['fd']}..{params['td']}" if "fd" in params else "")
        stats = _Stats()
        for _attempt in range(self.max_reference_restarts + 1):
            reference, get_url = self._send_request(params, stats, context)
            content = self._poll(reference, get_url, stats, context)
            if content is not None:
                self._log.info(
                    "Flex statement for %s: %d bytes after %d requests",
                    context,
                    len(content),
                    stats.requests,
                )
                return FlexStatementResult(
                    content=content,
                    query_id=query_id,
                    reference_code=reference,
                    from_date=from_date,
                    to_date=to_date,
                    period_days=period_days,
                    requests=stats.requests,
                    send_requests=stats.send_requests,
                    not_ready_polls=stats.not_ready_polls,
                    fetched_at=datetime.now(UTC),
                )
            self._log.warning("reference code %s is invalid (1017); new SendRequest", reference)
        raise FlexReferenceCodeInvalid(
            REFERENCE_INVALID_CODE,
            "Reference code is invalid.",
            f"{context}, after {self.max_reference_restarts} new SendRequests",
        )

    def fetch_range(self, query_id: str, start: date, end: date) -> list[FlexStatementResult]:
        """Statements covering ``start..end`` (inclusive), one per window of at most 365 days."""
        return [self.fetch(query_id, lo, hi) for lo, hi in split_range(start, end)]

    def _send_request(self, params: dict[str, str], stats: _Stats, context: str) -> tuple[str, str]:
        stats.send_requests += 1
        outcome = self._call("SendRequest", self.send_request_url, params, stats, context)
        if isinstance(outcome, bytes):
            raise FlexResponseError(
                f"SendRequest ({context}) returned a statement, not an envelope"
            )
        if outcome.code is not None:  # 1019/1017 make no sense here
            raise error_for_code(outcome.code, outcome.message, f"SendRequest, {context}")
        if not outcome.reference_code:
            raise FlexResponseError(f"SendRequest ({context}) returned no ReferenceCode")
        get_url = self.get_statement_url
        if self.follow_url and outcome.url and outcome.url.startswith(("https://", "http://")):
            get_url = outcome.url
        self._log.info("SendRequest %s -> reference code %s", context, outcome.reference_code)
        return outcome.reference_code, get_url

    def _poll(self, reference: str, get_url: str, stats: _Stats, context: str) -> bytes | None:
        """The statement, or None when the reference code is invalid (1017)."""
        deadline = self._clock() + self.poll_deadline
        interval = self.poll_interval
        params = {"q": reference, "v": str(self.version)}
        self._sleep(self.first_poll_delay)
        while True:
            outcome = self._call("GetStatement", get_url, params, stats, context)
            if isinstance(outcome, bytes):
                return outcome
            if outcome.code == REFERENCE_INVALID_CODE:
                return None
            if outcome.code != NOT_READY_CODE:
                raise FlexResponseError(
                    f"GetStatement ({context}) returned a {outcome.status} envelope without a statement"
                )
            stats.not_ready_polls += 1
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise FlexStatementTimeout(
                    f"Flex statement ({context}, reference {reference}) still generating (1019) "
                    f"after {self.poll_deadline:g} s and {stats.not_ready_polls} polls; IBKR "
                    "sometimes keeps 1019 for hours (e.g. at weekends): retry later"
                )
            self._log.debug(
                "reference %s not ready (1019); next poll in %.2f s", reference, interval
            )
            self._sleep(min(interval, remaining))
            interval = min(interval * self.poll_backoff, self.max_poll_interval)

    def _call(
        self, endpoint: str, url: str, params: dict[str, str], stats: _Stats, context: str
    ) -> bytes | Envelope:
        """One logical call: handles 1018 waits and transient retries; returns the statement, a
        Success envelope, or a 1019/1017 envelope; raises for everything else."""
        transient_failures = 0
        rate_waits = 0
        while True:
            if self.limiter is not None:
                self.limiter.acquire()
            stats.requests += 1
            self._log.debug("GET %s?%s", url, "&".join(f"{k}={v}" for k, v in params.items()))
            outcome = self._get(endpoint, url, params, context)
            if isinstance(outcome, FlexError):
                transient_failures = self._pause_transient(transient_failures, outcome)
                continue
            if isinstance(outcome, bytes) or outcome.code in (
                None,
                NOT_READY_CODE,
                REFERENCE_INVALID_CODE,
            ):
                return outcome
            error = error_for_code(outcome.code, outcome.message, f"{endpoint}, {context}")
            if outcome.code == RATE_LIMIT_CODE:
                if rate_waits >= self.max_rate_waits:
                    raise error
                rate_waits += 1
                self._log.warning(
                    "%s rate limited (1018); waiting %.1f s", endpoint, self.rate_wait_s
                )
                self._sleep(self.rate_wait_s)
                continue
            if outcome.code in TRANSIENT_CODES:
                transient_failures = self._pause_transient(transient_failures, error)
                continue
            raise error

    def _get(
        self, endpoint: str, url: str, params: dict[str, str], context: str
    ) -> bytes | Envelope | FlexError:
        """One HTTP GET, parsed. Network errors and unparseable HTTP 5xx bodies are returned (to be
        retried); other unparseable bodies raise ``FlexResponseError``. No exception raised here
        chains an httpx exception (those carry the request URL, token included); every text taken
        from the response is redacted."""
        error: FlexError
        try:
            response = self._http.get(url, params={"t": self._token, **params})
        except httpx.HTTPError as exc:
            detail = self._redact(str(exc))
            response, error = (
                None,
                FlexConnectionError(
                    f"{endpoint} ({context}) failed: {type(exc).__name__}: {detail}"
                ),
            )
        if response is None:
            return error
        try:
            outcome = parse_response(
                response.content, response.status_code, response.headers.get("content-type", "")
            )
        except FlexResponseError as exc:
            error = type(exc)(f"{endpoint} ({context}): {self._redact(str(exc))}")
        else:
            if isinstance(outcome, Envelope) and outcome.message:
                outcome = replace(outcome, message=self._redact(outcome.message))
            return outcome
        if response.status_code >= 500:
            return error
        if isinstance(error, FlexTruncatedResponse) and endpoint == "GetStatement":
            return error  # cut short in transit: the reference code is still valid, poll again
        raise error

    def _redact(self, text: str) -> str:
        """``text`` without the token, verbatim or as a ``t=`` URL parameter."""
        return redact_url_token(redact(text, self._token))

    def _pause_transient(self, failures: int, error: FlexError) -> int:
        """Sleep before retry number ``failures + 1`` (5 s, 10 s, 20 s, ... by default), or raise
        ``error`` when the retries are used up."""
        if failures >= self.max_transient_retries:
            raise error
        delay = self.transient_backoff * 2**failures
        self._log.warning("%s; retry %d in %.1f s", error, failures + 1, delay)
        self._sleep(delay)
        return failures + 1
