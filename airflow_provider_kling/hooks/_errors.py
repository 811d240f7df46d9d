"""
HTTP responses and transport failures -> the provider's error tree (:mod:`airflow_provider_kling.exceptions`).

Pure functions: they read a status code, headers and body bytes and build an exception; the hook raises it.
Every text that goes into an exception passes through :func:`redact` first (a server may echo the key).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Final

import httpx

from airflow_provider_kling.constants import (
    ERROR_BODY_EXCERPT_BYTES,
    VENDOR_CODE_RESOURCES_INSUFFICIENT,
    VENDOR_CODE_RESPONSE_ERROR,
    VENDOR_CODE_TASK_CREATION_ERROR,
)
from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingAuthError,
    KlingBadRequestError,
    KlingNotFoundError,
    KlingRateLimitError,
    KlingServerError,
    KlingTaskCreationError,
    KlingTransportError,
)
from airflow_provider_kling.hooks._redact import redact, redact_url

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Response headers that may carry the request id, in order of preference.
REQUEST_ID_HEADERS: Final = ("x-request-id", "request-id", "x-trace-id", "x-amzn-requestid")
#: How much of a body is decoded (and redacted) before it is cut to the excerpt.
_DECODE_LIMIT: Final = 64 * 1024
#: Longest vendor message kept on an exception.
_MESSAGE_LIMIT: Final = 300

_VENDOR_CODES: Final = frozenset(
    {VENDOR_CODE_RESOURCES_INSUFFICIENT, VENDOR_CODE_RESPONSE_ERROR, VENDOR_CODE_TASK_CREATION_ERROR}
)
#: ``code`` values that mean "no error" in a body that carries one next to its output.
_SUCCESS_CODES: Final = frozenset({"", "0", "200", "ok", "success", "succeeded"})
#: Transport failures that prove the request never reached the server.
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
#: The largest API answer read (status and submit answers are a few hundred bytes).
MAX_ANSWER_BYTES: Final = 1024 * 1024
#: What httpx, h11 or the JSON decoder may raise on a garbled answer instead of their own errors (a
#: 5,000-digit ``Content-Length`` is a ``ValueError``, 5 KB of ``[`` a ``RecursionError``).
GARBLED_ANSWER_ERRORS: Final = (ValueError, TypeError, OverflowError, LookupError, RecursionError)


@dataclass(frozen=True, slots=True)
class Answer:
    """
    An API answer, read whole: its status, headers and body.

    :param status_code: the HTTP status.
    :param headers: the response headers (a case-insensitive mapping).
    :param content: the body (at most :data:`MAX_ANSWER_BYTES`).
    """

    status_code: int
    headers: Mapping[str, str]
    content: bytes


class AnswerReader:
    """
    Collects an answer's body chunk by chunk, refusing one larger than :data:`MAX_ANSWER_BYTES`.

    :param status_code: the answer's HTTP status.
    :param what: the operation, for the message.
    """

    def __init__(self, status_code: int, *, what: str) -> None:
        self.status_code = status_code
        self.what = what
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, chunk: bytes) -> None:
        """
        Keep one more chunk of the body.

        :param chunk: the bytes.
        :raises KlingServerError: the body outgrew :data:`MAX_ANSWER_BYTES`.
        """
        self.size += len(chunk)
        if self.size > MAX_ANSWER_BYTES:
            raise KlingServerError(
                f"Kling {self.what} failed: the API answered {self.status_code} with a body of more than "
                f"{MAX_ANSWER_BYTES} bytes",
                status_code=self.status_code,
            )
        self.chunks.append(chunk)

    def answer(self, headers: Mapping[str, str]) -> Answer:
        """Return the whole answer."""
        return Answer(self.status_code, headers, b"".join(self.chunks))


class SendError(Exception):
    """
    What an async sender raises when a request got no (complete) HTTP answer; the hook translates it.

    :param error: the HTTP library's exception.
    :param sent: whether the request may have reached the server.
    """

    def __init__(self, error: BaseException, *, sent: bool) -> None:
        super().__init__(error)
        self.error = error
        self.sent = sent


def late_answer_error(*, what: str, url: str, seconds: float) -> KlingTransportError:
    """
    Build the exception for an answer that did not arrive whole within its time (a trickling body).

    :param what: the operation, for the message.
    :param url: the URL requested (its query string is left out).
    :param seconds: the time it had.
    """
    return KlingTransportError(
        f"Kling {what} got no complete answer from {redact_url(url)} within {seconds:.3g} s",
        sent=True,
    )


def garbled_answer_error(error: BaseException, *, what: str, url: str) -> KlingTransportError:
    """
    Build the exception for an answer so garbled that the HTTP or JSON layer failed on it.

    :param error: what that layer raised.
    :param what: the operation, for the message.
    :param url: the URL requested (its query string is left out).
    """
    return KlingTransportError(
        f"Kling {what} got a garbled answer from {redact_url(url)} ({type(error).__name__})",
        sent=True,
    )


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """
    Return the seconds a response asks the client to wait, or ``None``.

    Reads ``Retry-After`` (seconds, or an HTTP date) and the ``retry-after-ms`` header some gateways send.
    A date in the past means 0. Capping is the retry policy's business.

    :param headers: the response headers (case-insensitive mapping, such as ``httpx.Headers``).
    :param now: the current Unix time (for tests); defaults to ``time.time()``.
    """
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        seconds = _non_negative_float(milliseconds)
        if seconds is not None:
            return seconds / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _non_negative_float(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def normalize_vendor_code(code: object) -> str | None:
    """
    Return a vendor error code as text, or ``None`` when there is none.

    A code sent as a JSON number loses its leading zeros (``6001094``); it is padded back when that gives
    one of the documented codes.

    :param code: the ``code`` value of an error body.
    """
    if code is None or isinstance(code, bool | dict | list):
        return None
    text = str(code).strip()
    if not text:
        return None
    if text.isdigit() and text.zfill(9) in _VENDOR_CODES:
        return text.zfill(9)
    return text[:64]


@dataclass(frozen=True, slots=True)
class ErrorDetails:
    """
    What an error body says, whichever of its shapes it came in.

    :param message: the vendor's message, if any.
    :param vendor_code: the vendor's error code, if any.
    :param error_type: the ``error.type`` of an OpenAI-style body, if any.
    :param request_id: the body's ``request_id``, if any.
    """

    message: str | None = None
    vendor_code: str | None = None
    error_type: str | None = None
    request_id: str | None = None


def error_details(payload: object) -> ErrorDetails:
    """
    Read an error body of either documented shape; anything else gives empty details.

    Shapes: ``{"error": {"message", "type", "param", "code"}}`` (OpenAI-style, ModelVerse's general API)
    and a flat ``{"code", "message"}``. ``request_id`` is read from either.

    :param payload: the decoded JSON body.
    """
    if not isinstance(payload, dict):
        return ErrorDetails()
    request_id = _text(payload.get("request_id"))
    error = payload.get("error")
    if isinstance(error, dict):
        return ErrorDetails(
            message=_text(error.get("message")),
            vendor_code=normalize_vendor_code(error.get("code")),
            error_type=_text(error.get("type")),
            request_id=request_id or _text(error.get("request_id")),
        )
    if isinstance(error, str) and error:
        return ErrorDetails(
            message=error, vendor_code=normalize_vendor_code(payload.get("code")), request_id=request_id
        )
    return ErrorDetails(
        message=_text(payload.get("message")) or _text(payload.get("msg")),
        vendor_code=normalize_vendor_code(payload.get("code")),
        request_id=request_id,
    )


def embedded_error(payload: object) -> ErrorDetails | None:
    """
    Return the error a 2xx body carries instead of an output, or ``None``.

    Only consulted when a 2xx body lacks the expected output: a body with an ``error`` object, or with a
    ``code`` that is not a success code (``0``, ``200``, ``success`` ...), is an error.

    :param payload: the decoded JSON body of a 2xx response.
    """
    if not isinstance(payload, dict):
        return None
    details = error_details(payload)
    if isinstance(payload.get("error"), dict | str) and payload.get("error"):
        return details
    if details.vendor_code is not None and details.vendor_code.lower() not in _SUCCESS_CODES:
        return details
    return None


def api_error_class(status_code: int, vendor_code: str | None) -> type[KlingAPIError]:
    """
    Pick the exception class of an API error.

    401/403 and 404 win (they say what the caller must fix); then the vendor codes (006001094 rate
    limit, 006001095 server, 006001099 task creation); then the status: 400/422 bad request, 429 rate
    limit, 5xx server; anything else is a plain :class:`KlingAPIError`.

    :param status_code: the HTTP status.
    :param vendor_code: the body's vendor code, if any.
    """
    if status_code in (401, 403):
        return KlingAuthError
    if status_code == 404:
        return KlingNotFoundError
    if vendor_code == VENDOR_CODE_RESOURCES_INSUFFICIENT:
        return KlingRateLimitError
    if vendor_code == VENDOR_CODE_RESPONSE_ERROR:
        return KlingServerError
    if vendor_code == VENDOR_CODE_TASK_CREATION_ERROR:
        return KlingTaskCreationError
    if status_code in (400, 422):
        return KlingBadRequestError
    if status_code == 429:
        return KlingRateLimitError
    if status_code >= 500:
        return KlingServerError
    return KlingAPIError


def api_error(
    status_code: int,
    headers: Mapping[str, str],
    content: bytes,
    *,
    what: str,
    api_key: str | None,
    details: ErrorDetails | None = None,
    now: float | None = None,
) -> KlingAPIError:
    """
    Build the exception for an error response (any non-2xx, or a 2xx that carries an error).

    :param status_code: the HTTP status.
    :param headers: the response headers (case-insensitive mapping).
    :param content: the body bytes (or their first bytes).
    :param what: the operation, for the message (``"submit"``, ``"status of task abc"``).
    :param api_key: the API key, redacted from every text kept.
    :param details: the body's error details when the caller has parsed them already.
    :param now: the current Unix time, for an HTTP-date ``Retry-After`` (tests).
    """
    if details is None:
        details = error_details(_json_or_none(content))
    request_id = details.request_id or next(
        (value for name in REQUEST_ID_HEADERS if (value := headers.get(name))), None
    )
    summary = details.message or details.error_type or httpx.codes.get_reason_phrase(status_code)
    summary = summary or "unexpected response"
    if len(summary) > _MESSAGE_LIMIT:
        summary = summary[: _MESSAGE_LIMIT - 3] + "..."
    cls = api_error_class(status_code, details.vendor_code)
    return cls(
        redact(f"Kling {what} failed: {summary}", api_key),
        status_code=status_code,
        vendor_code=redact(details.vendor_code, api_key) if details.vendor_code else None,
        request_id=redact(request_id[:128], api_key) if request_id else None,
        body_excerpt=body_excerpt(content, api_key),
        retry_after=parse_retry_after(headers, now=now),
    )


def malformed_response_error(
    status_code: int, content: bytes, *, what: str, problem: str, api_key: str | None
) -> KlingServerError:
    """
    Build the exception for a 2xx response that cannot be used (not JSON, or no task id in it).

    It is a :class:`KlingServerError`: a status query retries it; a submit reports it as uncertain.

    :param status_code: the HTTP status (2xx).
    :param content: the body bytes.
    :param what: the operation, for the message.
    :param problem: what is wrong with the body.
    :param api_key: the API key, redacted from every text kept.
    """
    return KlingServerError(
        redact(f"Kling {what} failed: the API answered {status_code} with {problem}", api_key),
        status_code=status_code,
        body_excerpt=body_excerpt(content, api_key),
    )


def body_excerpt(content: bytes, api_key: str | None) -> str:
    """
    Return the first :data:`~airflow_provider_kling.constants.ERROR_BODY_EXCERPT_BYTES` bytes of a body.

    The key is redacted before the cut, so that a key straddling the cut cannot leak half of itself.

    :param content: the body bytes.
    :param api_key: the API key.
    """
    text = redact(content[:_DECODE_LIMIT].decode("utf-8", errors="replace"), api_key)
    cut = text.encode("utf-8")[:ERROR_BODY_EXCERPT_BYTES]
    return cut.decode("utf-8", errors="ignore")


def transport_error(
    error: BaseException, *, what: str, url: str, api_key: str | None, sent: bool | None = None
) -> KlingTransportError:
    """
    Build the exception for a request that got no (complete) HTTP response.

    ``sent`` is ``False`` only where nothing can have reached the server: a refused or timed-out connect,
    no free connection in the pool, an unsupported scheme. A read timeout or a dropped connection after
    sending leaves ``sent=True``: the server may have acted on the request.

    :param error: the HTTP library's exception (httpx, or aiohttp's through :class:`SendError`).
    :param what: the operation, for the message.
    :param url: the URL requested (its query string is left out of the message).
    :param api_key: the API key, redacted from the message.
    :param sent: whether the request may have reached the server; read from the httpx exception's class
        when not given.
    """
    if sent is None:
        sent = not isinstance(error, _NOT_SENT)
    target = redact_url(url)
    detail = str(error) or type(error).__name__
    return KlingTransportError(
        redact(f"Kling {what} got no response from {target}: {type(error).__name__}: {detail}", api_key),
        sent=sent,
    )


def decode_json(content: bytes) -> Any:
    """
    Decode a JSON body.

    :param content: the body bytes.
    :raises ValueError: the body is not JSON (or nests too deeply to decode).
    """
    try:
        return json.loads(content)
    except RecursionError:
        raise ValueError("the JSON nests too deeply") from None


def _json_or_none(content: bytes) -> object:
    try:
        return decode_json(content[:_DECODE_LIMIT]) if content else None
    except ValueError:
        return None


def _text(value: object) -> str | None:
    if value is None or isinstance(value, dict | list | bool):
        return None
    text = str(value).strip()
    return text or None


def _non_negative_float(value: str) -> float | None:
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None
