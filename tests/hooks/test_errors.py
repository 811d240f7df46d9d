from __future__ import annotations

import json
from email.utils import formatdate

import httpx
import pytest

from airflow_provider_kling.constants import ERROR_BODY_EXCERPT_BYTES
from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingAuthError,
    KlingBadRequestError,
    KlingNotFoundError,
    KlingRateLimitError,
    KlingServerError,
    KlingTaskCreationError,
)
from airflow_provider_kling.hooks._errors import (
    api_error,
    api_error_class,
    body_excerpt,
    embedded_error,
    error_details,
    normalize_vendor_code,
    parse_retry_after,
    transport_error,
)
from airflow_provider_kling.hooks._redact import redact

KEY = "sk-ERRORS-5d1c7a9e2f"
NOW = 1_760_000_000.0


def error_for(status: int, body: object = b"", headers: dict[str, str] | None = None) -> KlingAPIError:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return api_error(status, httpx.Headers(headers or {}), content, what="submit", api_key=KEY, now=NOW)


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, None, KlingBadRequestError),
        (422, None, KlingBadRequestError),
        (401, None, KlingAuthError),
        (403, None, KlingAuthError),
        (404, None, KlingNotFoundError),
        (429, None, KlingRateLimitError),
        (500, None, KlingServerError),
        (502, None, KlingServerError),
        (503, None, KlingServerError),
        (504, None, KlingServerError),
        (408, None, KlingAPIError),
        (409, None, KlingAPIError),
        (418, None, KlingAPIError),
        (400, "006001094", KlingRateLimitError),
        (200, "006001094", KlingRateLimitError),
        (400, "006001095", KlingServerError),
        (200, "006001095", KlingServerError),
        (400, "006001099", KlingTaskCreationError),
        (500, "006001099", KlingTaskCreationError),
        (401, "006001099", KlingAuthError),
        (404, "006001094", KlingNotFoundError),
    ],
)
def test_error_class(status: int, code: str | None, expected: type[KlingAPIError]) -> None:
    assert api_error_class(status, code) is expected


def test_openai_style_body() -> None:
    error = error_for(
        400,
        {
            "error": {
                "message": "bad prompt",
                "type": "invalid_request_error",
                "param": None,
                "code": "006001099",
            },
            "request_id": "req-1",
        },
    )
    assert type(error) is KlingTaskCreationError
    assert (error.status_code, error.vendor_code, error.request_id) == (400, "006001099", "req-1")
    assert error.message == "Kling submit failed: bad prompt"
    assert "bad prompt" in str(error)
    assert "code 006001099" in str(error)
    assert "request_id req-1" in str(error)


def test_flat_body() -> None:
    error = error_for(429, {"code": "006001094", "message": "resources insufficient", "request_id": "r2"})
    assert type(error) is KlingRateLimitError
    assert (error.vendor_code, error.request_id, error.message) == (
        "006001094",
        "r2",
        "Kling submit failed: resources insufficient",
    )


def test_request_id_from_header_when_body_has_none() -> None:
    error = error_for(500, {"error": {"message": "boom"}}, {"X-Request-Id": "hdr-7"})
    assert error.request_id == "hdr-7"


def test_html_body_kept_raw() -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    error = error_for(502, page)
    assert type(error) is KlingServerError
    assert error.vendor_code is None
    assert error.message == "Kling submit failed: Bad Gateway"
    assert error.body_excerpt == page.decode()


def test_empty_body_uses_reason_phrase() -> None:
    assert error_for(503).message == "Kling submit failed: Service Unavailable"


def test_unknown_status_without_reason() -> None:
    error = error_for(599)
    assert type(error) is KlingServerError
    assert error.message == "Kling submit failed: unexpected response"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("006001094", "006001094"),
        (6001094, "006001094"),
        (6001095, "006001095"),
        ("6001099", "006001099"),
        (1234, "1234"),
        ("invalid_api_key", "invalid_api_key"),
        (None, None),
        ("", None),
        (True, None),
        ({"nested": 1}, None),
    ],
)
def test_normalize_vendor_code(code: object, expected: str | None) -> None:
    assert normalize_vendor_code(code) == expected


def test_vendor_code_as_json_number_is_mapped() -> None:
    assert type(error_for(200, {"code": 6001094, "message": "busy"})) is KlingRateLimitError


def test_excerpt_is_bounded() -> None:
    error = error_for(500, b"x" * 10_000)
    assert len(error.body_excerpt.encode()) == ERROR_BODY_EXCERPT_BYTES


def test_excerpt_cut_never_splits_a_character() -> None:
    excerpt = body_excerpt("é".encode() * 1000, None)
    assert excerpt == "é" * (ERROR_BODY_EXCERPT_BYTES // 2)


def test_key_straddling_the_cut_is_redacted_first() -> None:
    content = b"a" * (ERROR_BODY_EXCERPT_BYTES - 5) + KEY.encode() + b"tail"
    excerpt = body_excerpt(content, KEY)
    assert KEY[:5] not in excerpt
    assert excerpt == "a" * (ERROR_BODY_EXCERPT_BYTES - 5) + "***ta"


def test_echoed_key_is_redacted_everywhere() -> None:
    error = error_for(
        401,
        {"error": {"message": f"Invalid key {KEY}", "code": KEY}, "request_id": KEY},
        {"x-request-id": KEY},
    )
    for text in (
        str(error),
        repr(error),
        error.message,
        error.body_excerpt,
        error.vendor_code,
        error.request_id,
    ):
        assert text is not None
        assert KEY not in text
    assert "***" in error.message


def test_redact() -> None:
    assert redact(f"a {KEY} b {KEY}", KEY) == "a *** b ***"
    assert redact("nothing", None) == "nothing"
    assert redact("nothing", "") == "nothing"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"Retry-After": formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"Retry-After": formatdate(NOW - 30, usegmt=True)}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-4"}, None),
        ({"Retry-After": "inf"}, None),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"retry-after-ms": "x", "Retry-After": "9"}, 9.0),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(httpx.Headers(headers), now=NOW) == expected


def test_retry_after_kept_on_error() -> None:
    assert error_for(429, b"", {"Retry-After": "12"}).retry_after == 12.0


@pytest.mark.parametrize(
    ("payload", "is_error"),
    [
        ({"output": {"task_id": "t"}}, False),
        ({"code": 0, "message": "success"}, False),
        ({"code": "200"}, False),
        ({"code": "006001095", "message": "upstream"}, True),
        ({"error": {"message": "no", "code": "x"}}, True),
        ({"error": "plain text error"}, True),
        ({}, False),
        ([1, 2], False),
        ("text", False),
    ],
)
def test_embedded_error(payload: object, is_error: bool) -> None:
    assert (embedded_error(payload) is not None) is is_error


def test_error_details_of_other_shapes_are_empty() -> None:
    assert error_details(["a"]).message is None
    assert error_details({"error": {"message": {"nested": True}}}).message is None


@pytest.mark.parametrize(
    ("error", "sent"),
    [
        (httpx.ConnectError("refused"), False),
        (httpx.ConnectTimeout("connect timed out"), False),
        (httpx.PoolTimeout("pool"), False),
        (httpx.UnsupportedProtocol("ftp"), False),
        (httpx.ReadTimeout("read timed out"), True),
        (httpx.WriteTimeout("write timed out"), True),
        (httpx.ReadError("reset"), True),
        (httpx.WriteError("broken pipe"), True),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), True),
    ],
)
def test_transport_error_sent(error: httpx.RequestError, sent: bool) -> None:
    converted = transport_error(
        error, what="submit", url="https://kling.test/v1/tasks/submit?sig=secret", api_key=KEY
    )
    assert converted.sent is sent
    assert type(error).__name__ in str(converted)
    assert "sig=secret" not in str(converted)


def test_transport_error_redacts_key() -> None:
    converted = transport_error(
        httpx.ReadError(f"peer said {KEY}"), what="submit", url="https://x", api_key=KEY
    )
    assert KEY not in str(converted)
