"""Flex Web Service error codes and the exceptions the client raises.

The code table (IBKR's exact messages, including its typo "Account in invalid") is shared by the client
and the simulator. Exception messages name the code, IBKR's message and what the user should do; they
never contain the Flex token.
"""

from __future__ import annotations

import re

ERROR_MESSAGES: dict[int, str] = {
    1001: "Statement could not be generated at this time. Please try again shortly.",
    1003: "Statement is not available.",
    1004: "Statement is incomplete at this time. Please try again shortly.",
    1005: "Settlement data is not ready at this time. Please try again shortly.",
    1006: "FIFO P/L data is not ready at this time. Please try again shortly.",
    1007: "MTM P/L data is not ready at this time. Please try again shortly.",
    1008: "MTM and FIFO P/L data is not ready at this time. Please try again shortly.",
    1009: "The server is under heavy load. Statement could not be generated at this time. "
    "Please try again shortly.",
    1010: "Legacy Flex Queries are no longer supported. Please convert over to Activity Flex.",
    1011: "Service account is inactive.",
    1012: "Token has expired.",
    1013: "IP restriction.",
    1014: "Query is invalid.",
    1015: "Token is invalid.",
    1016: "Account in invalid.",
    1017: "Reference code is invalid.",
    1018: "Too many requests have been made from this token. Please try again shortly.",
    1019: "Statement generation in progress. Please try again shortly.",
    1020: "Invalid request or unable to validate request.",
    1021: "Statement could not be retrieved at this time. Please try again shortly.",
    1025: "Too many failed attempts. Please review your configuration.",
}

NOT_READY_CODE = 1019
RATE_LIMIT_CODE = 1018
REFERENCE_INVALID_CODE = 1017
TRANSIENT_CODES: frozenset[int] = frozenset({1001, 1004, 1005, 1006, 1007, 1008, 1009, 1021})


class FlexError(Exception):
    """Base class of every Flex Web Service failure raised by ``ibpipeline.flex``."""


class FlexResponseError(FlexError):
    """The service answered with something that is neither an envelope nor a Flex XML statement
    (HTML error page, truncated or non-XML body, CSV/TEXT query output, unexpected envelope)."""


class FlexTruncatedResponse(FlexResponseError):
    """An XML body that does not parse (cut short or malformed); GetStatement retries it."""


class FlexConnectionError(FlexError):
    """The HTTP request itself failed (DNS, connect, timeout) after the bounded retries."""


class FlexStatementTimeout(FlexError):
    """Polling saw 1019 "generation in progress" until the client's deadline."""


class FlexRequestError(FlexError):
    """The service returned a ``Fail``/``Warn`` envelope with an ``ErrorCode``.

    ``code`` is the ErrorCode, ``ibkr_message`` IBKR's ErrorMessage as received.
    """

    advice = "See IBKR's Flex Web Service error code table."

    def __init__(self, code: int, ibkr_message: str, context: str = "") -> None:
        self.code = code
        self.ibkr_message = ibkr_message
        self.context = context
        where = f" ({context})" if context else ""
        super().__init__(f"Flex Web Service error {code}: {ibkr_message}{where} {self.advice}")

    def __reduce__(self):  # keep subclasses picklable (Dagster ships failures across processes)
        return (type(self), (self.code, self.ibkr_message, self.context))


class FlexTransientError(FlexRequestError):
    """A transient code (1001, 1004-1009, 1021) persisted through the bounded retries."""

    advice = (
        "The statement could not be produced right now; retry later (not in a tight loop: "
        "repeated failures lead to a 1025 lockout)."
    )


class FlexRateLimited(FlexRequestError):
    """1018 persisted through the bounded waits (another process may share the token)."""

    advice = (
        "IBKR allows 1 request/s and 10 requests/min per token; make sure no other process "
        "uses the same token, then retry later."
    )


class FlexReferenceCodeInvalid(FlexRequestError):
    """1017 persisted after the bounded number of fresh SendRequests."""

    advice = "The reference code kept expiring; retry later."


class FlexStatementNotAvailable(FlexRequestError):
    """1003: the statement is not available (e.g. ``td`` not yet published)."""

    advice = (
        "Request a window whose end date has been published (end of the previous business day)."
    )


class FlexConfigurationError(FlexRequestError):
    """A configuration code (1010-1016, 1020): retrying cannot help until the user fixes it."""


class FlexLegacyQuery(FlexConfigurationError):
    """1010: the query is a legacy Flex query."""

    advice = "Recreate the query as an Activity Flex Query in the Client Portal."


class FlexServiceInactive(FlexConfigurationError):
    """1011: the Flex Web Service is inactive for the account."""

    advice = (
        "Enable the Flex Web Service in Client Portal (Reporting > Settings > Flex Web Service)."
    )


class FlexTokenExpired(FlexConfigurationError):
    """1012: the token has expired."""

    advice = (
        "Generate a new Flex Web Service token in Client Portal and update IBKR_FLEX_TOKEN (or the "
        "query's token variable named in IBKR_FLEX_QUERIES)."
    )


class FlexIPRestricted(FlexConfigurationError):
    """1013: the token is restricted to another IP address."""

    advice = (
        "Run from the IP address the token is bound to, or generate a token without IP restriction."
    )


class FlexQueryInvalid(FlexConfigurationError):
    """1014: the query id is not valid for this token."""

    advice = (
        "Check IBKR_FLEX_QUERY_ID (or the query's id in IBKR_FLEX_QUERIES) against the Activity "
        "Flex Query id shown in Client Portal, and that the query belongs to the token's user."
    )


class FlexTokenInvalid(FlexConfigurationError):
    """1015: the token is not valid (mistyped, or replaced by a newer token)."""

    advice = (
        "Copy the current token from Client Portal into IBKR_FLEX_TOKEN (or the query's token "
        "variable named in IBKR_FLEX_QUERIES)."
    )


class FlexAccountInvalid(FlexConfigurationError):
    """1016: the account is not valid."""

    advice = "Check that the query's accounts are still open and accessible to this user."


class FlexInvalidRequest(FlexConfigurationError):
    """1020: invalid request or unable to validate it (often a bad token/query pair)."""

    advice = (
        "Check token, query id and the fd/td/p parameters (fd and td together, at most 365 days)."
    )


class FlexLockout(FlexRequestError):
    """1025: locked out after too many failed attempts."""

    advice = (
        "Stop all requests on this token for a long cooldown (hours) and fix the configuration; "
        "retrying extends the lockout."
    )


_BY_CODE: dict[int, type[FlexRequestError]] = {
    1003: FlexStatementNotAvailable,
    1010: FlexLegacyQuery,
    1011: FlexServiceInactive,
    1012: FlexTokenExpired,
    1013: FlexIPRestricted,
    1014: FlexQueryInvalid,
    1015: FlexTokenInvalid,
    1016: FlexAccountInvalid,
    1017: FlexReferenceCodeInvalid,
    1018: FlexRateLimited,
    1020: FlexInvalidRequest,
    1025: FlexLockout,
    **dict.fromkeys(TRANSIENT_CODES, FlexTransientError),
}


def error_for_code(code: int, ibkr_message: str, context: str = "") -> FlexRequestError:
    """The specific exception for an ErrorCode (``FlexRequestError`` for codes IBKR does not list)."""
    return _BY_CODE.get(code, FlexRequestError)(code, ibkr_message, context)


def redact(text: str, token: str) -> str:
    """``text`` with every occurrence of ``token`` replaced by ``***`` (no-op for an empty token)."""
    return text.replace(token, "***") if token else text


_TOKEN_PARAM = re.compile(r"(?<![A-Za-z0-9_])(t=)[^&\s\"'<>]*")


def redact_url_token(text: str) -> str:
    """``text`` with the value of every ``t=`` query parameter (the Flex token) replaced by ``***``."""
    return _TOKEN_PARAM.sub(r"\1***", text)
