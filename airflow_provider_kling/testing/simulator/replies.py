"""The simulator's canned answers: :class:`_Reply`, JSON API errors, the 429 and the S3-style XML errors."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from airflow_provider_kling.testing.simulator.faults import _FAULT_SPECS


@dataclass(frozen=True)
class _Reply:
    status: int
    payload: Any
    headers: tuple[tuple[str, str], ...] = ()


def _error(status: int, message: str, *, type_: str, code: str | None, param: str | None = None) -> _Reply:
    return _Reply(status, {"error": {"message": message, "type": type_, "param": param, "code": code}})


def _rate_limit_reply(
    message: str = _FAULT_SPECS["rate_limit"][1]["message"],
    *,
    code: str | None = _FAULT_SPECS["rate_limit"][1]["code"],
    retry_after: float | str | None = _FAULT_SPECS["rate_limit"][1]["retry_after"],
) -> _Reply:
    """A 429 with an optional ``Retry-After``: a ``rate_limit`` fault, or a submit beyond capacity."""
    reply = _error(HTTPStatus.TOO_MANY_REQUESTS, message, type_="rate_limit_error", code=code)
    if retry_after is None:
        headers: tuple[tuple[str, str], ...] = ()
    else:
        value = retry_after if isinstance(retry_after, str) else f"{retry_after:g}"
        headers = (("Retry-After", value),)
    return _Reply(reply.status, reply.payload, headers)


def _s3_error(status: int, code: str, message: str) -> _Reply:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>{uuid.uuid4().hex}</RequestId></Error>"
    )
    return _Reply(status, xml.encode(), (("Content-Type", "application/xml"),))


def _expired_reply() -> _Reply:
    return _s3_error(HTTPStatus.FORBIDDEN, "AccessDenied", "Request has expired")
