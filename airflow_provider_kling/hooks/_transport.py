"""
One API request on the wire, sync or async: bound it in time, send it, and read its whole answer.

A request that gets no whole answer (refused, reset, too slow, garbled) raises the provider's
:class:`~airflow_provider_kling.exceptions.KlingTransportError` with the key redacted, the same on both
paths; what a whole answer says is read by :mod:`~airflow_provider_kling.hooks._answers`, and retrying is
:class:`~airflow_provider_kling.hooks.kling.KlingHook`'s.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx

from airflow_provider_kling.exceptions import KlingTransportError
from airflow_provider_kling.hooks._errors import (
    GARBLED_ANSWER_ERRORS,
    AnswerReader,
    SendError,
    garbled_answer_error,
    late_answer_error,
    transport_error,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_kling.hooks._clients import AsyncSender
    from airflow_provider_kling.hooks._errors import Answer
    from airflow_provider_kling.hooks._settings import KlingSettings


def request_options(
    settings: KlingSettings, json: Any, params: dict[str, str] | None, seconds: float
) -> dict[str, Any]:
    """
    Options every API request sends: the key's header, the body, the query and its time.

    :param settings: the connection's settings.
    :param json: the JSON body, if any.
    :param params: the query, if any.
    :param seconds: the request's connect/read/write/pool timeout.
    """
    return {"headers": settings.auth_headers(), "json": json, "params": params, "timeout": seconds}


def attempt_seconds(
    settings: KlingSettings, deadline: float | None, what: str, *, monotonic: Callable[[], float]
) -> float:
    """
    Seconds one request may take: the connection's timeout, cut to what is left before ``deadline``.

    :param settings: the connection's settings.
    :param deadline: the monotonic time the caller must be done by, if any.
    :param what: the operation, for the message.
    :param monotonic: the clock ``deadline`` is on.
    :raises KlingTransportError: no time is left (nothing was sent).
    """
    if deadline is None:
        return settings.timeout
    left = deadline - monotonic()
    if left <= 0:
        raise KlingTransportError(f"Kling {what}: no time left within the caller's timeout", sent=False)
    return min(settings.timeout, left)


def send(
    client: httpx.Client,
    settings: KlingSettings,
    method: str,
    path: str,
    *,
    what: str,
    deadline: float | None,
    monotonic: Callable[[], float],
    json: Any = None,
    params: dict[str, str] | None = None,
) -> Answer:
    """
    Send one API request and read its whole answer within the connection's timeout and ``deadline``.

    :param client: the hook's sync client.
    :param settings: the connection's settings.
    :param method: the HTTP method.
    :param path: the API path.
    :param what: the operation, for the messages.
    :param deadline: the monotonic time the caller must be done by, if any.
    :param monotonic: the clock ``deadline`` is on.
    :param json: the JSON body, if any.
    :param params: the query, if any.
    """
    url = settings.url(path)
    seconds = attempt_seconds(settings, deadline, what, monotonic=monotonic)
    ends = monotonic() + seconds
    try:
        with client.stream(method, url, **request_options(settings, json, params, seconds)) as response:
            reader = AnswerReader(response.status_code, what=what)
            for chunk in response.iter_bytes():
                reader.add(chunk)
                if monotonic() > ends:
                    raise late_answer_error(what=what, url=url, seconds=seconds)
            return reader.answer(response.headers)
    except httpx.RequestError as error:
        raise transport_error(error, what=what, url=url, api_key=settings.api_key) from error
    except GARBLED_ANSWER_ERRORS as error:
        raise garbled_answer_error(error, what=what, url=url) from None


async def asend(
    sender: AsyncSender,
    slots: asyncio.Semaphore,
    settings: KlingSettings,
    method: str,
    path: str,
    *,
    what: str,
    deadline: float | None,
    monotonic: Callable[[], float],
    params: dict[str, str] | None = None,
) -> Answer:
    """
    Send one API request and read its whole answer without blocking the loop.

    Waiting for the connection's request slot on the loop counts against ``deadline`` only; the request
    and its body against the connection's timeout too. The sender (aiohttp) only moves bytes: the
    deadlines and the translation of every failure into the error tree are the same as :func:`send`'s.

    :param sender: the loop's shared sender.
    :param slots: the connection's bound on requests in flight on the loop.
    :param settings: the connection's settings.
    :param method: the HTTP method.
    :param path: the API path.
    :param what: the operation, for the messages.
    :param deadline: the monotonic time the caller must be done by, if any.
    :param monotonic: the clock ``deadline`` is on.
    :param params: the query, if any.
    """
    url = settings.url(path)
    seconds = attempt_seconds(settings, deadline, what, monotonic=monotonic)
    headers = settings.auth_headers()
    try:
        async with asyncio.timeout(None if deadline is None else deadline - monotonic()) as scope:
            # The slot is held while the request and its body are in flight (not while retrying): a
            # burst waits here, in O(1), and the loop never opens more sockets than the bound.
            async with slots:
                seconds = attempt_seconds(settings, deadline, what, monotonic=monotonic)
                # One timer for both bounds: the request's time is never beyond the deadline.
                scope.reschedule(asyncio.get_running_loop().time() + seconds)
                return await sender.fetch(
                    method, url, headers=headers, params=params, seconds=seconds, what=what
                )
    except TimeoutError:
        raise late_answer_error(what=what, url=url, seconds=seconds) from None
    except SendError as error:
        raise transport_error(
            error.error, what=what, url=url, api_key=settings.api_key, sent=error.sent
        ) from error.error
    except GARBLED_ANSWER_ERRORS as error:
        raise garbled_answer_error(error, what=what, url=url) from None
