"""
The hook's async path over real sockets (aiohttp, ``_clients.AiohttpSender``): the same bounds, error tree
and key redaction as the sync path, proven against a hostile server (``respx`` cannot see aiohttp).
"""

from __future__ import annotations

import json
import socket
import time
from typing import TYPE_CHECKING, Any

import pytest
from hostile import Exchange, HostileServer, response_head

from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingServerError,
    KlingTransportError,
)
from airflow_provider_kling.hooks._errors import MAX_ANSWER_BYTES
from airflow_provider_kling.models import TaskStatus

from ._support import API_KEY, Sleeps, make_hook, set_connection, status_body

if TYPE_CHECKING:
    from hostile import Reply

    from airflow_provider_kling.hooks.kling import KlingHook

#: Generous bound for "ended on time" on a noisy, shared machine.
ON_TIME = 4.0


def reply(status: int, body: bytes, **headers: str) -> Reply:
    def answer(exchange: Exchange) -> None:
        exchange.send(response_head(status, {"Content-Length": str(len(body)), **headers}) + body)

    return answer


def answer_json(payload: Any, status: int = 200) -> Reply:
    return reply(status, json.dumps(payload).encode(), **{"Content-Type": "application/json"})


def async_hook(monkeypatch: pytest.MonkeyPatch, server: HostileServer, **extra: Any) -> KlingHook:
    set_connection(monkeypatch, "kling_async", host=server.url(""), extra=extra or None)
    return make_hook(Sleeps(), "kling_async")


async def test_a_status_query_sends_the_bare_key_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    with HostileServer([answer_json(status_body("task-1", "Success"))]) as server:
        task = await async_hook(monkeypatch, server).aget_task("task-1")
    assert task.status is TaskStatus.SUCCESS
    assert task.urls == ["https://cdn.test/results/task-1/1.mp4"]
    (request,) = server.requests
    assert (request.method, request.target) == ("GET", "/v1/tasks/status?task_id=task-1")
    assert request.headers["authorization"] == API_KEY
    assert request.headers["accept"] == "application/json"
    assert request.headers["user-agent"].startswith("airflow-provider-kling/")


async def test_a_huge_content_length_is_a_transport_error(monkeypatch: pytest.MonkeyPatch) -> None:
    garbled = reply(200, b"{}", **{"Content-Length": "9" * 5000})
    with HostileServer([garbled]) as server, pytest.raises(KlingTransportError) as caught:
        await async_hook(monkeypatch, server, max_retries=0).aget_task("task-1")
    assert caught.value.sent


async def test_an_answer_larger_than_the_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with (
        HostileServer([reply(200, b" " * (MAX_ANSWER_BYTES + 1))]) as server,
        pytest.raises(KlingServerError, match="more than"),
    ):
        await async_hook(monkeypatch, server, max_retries=0).aget_task("task-1")


async def test_an_endless_answer_is_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    def endless(exchange: Exchange) -> None:
        exchange.endless(
            response_head(200, {"Transfer-Encoding": "chunked"}), chunk=b"10000\r\n" + b" " * 65536 + b"\r\n"
        )

    with HostileServer([endless]) as server:
        started = time.monotonic()
        with pytest.raises(KlingServerError, match="more than"):
            await async_hook(monkeypatch, server, max_retries=0).aget_task("task-1")
        assert time.monotonic() - started < ON_TIME


async def test_a_deeply_nested_body_is_a_server_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with (
        HostileServer([reply(200, b"[" * 5000)]) as server,
        pytest.raises(KlingServerError, match="not JSON"),
    ):
        await async_hook(monkeypatch, server, max_retries=0).aget_task("task-1")


async def test_a_status_answer_about_another_task_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with (
        HostileServer([answer_json(status_body("task-2", "Success"))]) as server,
        pytest.raises(KlingServerError, match=r"another task \(task-2\)"),
    ):
        await async_hook(monkeypatch, server, max_retries=0).aget_task("task-1")


async def test_a_trickling_answer_ends_at_the_request_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    body = json.dumps(status_body(status="Running")).encode()

    def trickle(exchange: Exchange) -> None:
        exchange.send(response_head(200, {"Content-Length": str(len(body))}))
        exchange.trickle(body, every=0.2)

    with HostileServer([trickle]) as server:
        started = time.monotonic()
        with pytest.raises(KlingTransportError, match="no complete answer"):
            await async_hook(monkeypatch, server, timeout=1, max_retries=0).aget_task("task-1")
        assert time.monotonic() - started < ON_TIME


async def test_the_key_echoed_by_the_server_never_reaches_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    echo = answer_json({"error": {"message": f"bad key {API_KEY}", "code": API_KEY}}, status=500)
    with HostileServer([reply(500, b"", **{"X-Request-Id": API_KEY}), echo]) as server:
        hook = async_hook(monkeypatch, server, max_retries=1)
        with pytest.raises(KlingServerError) as caught:
            await hook.aget_task("task-1")
    error = caught.value
    texts = [
        str(error),
        repr(error),
        error.body_excerpt or "",
        error.vendor_code or "",
        error.request_id or "",
    ]
    assert all(API_KEY not in text for text in texts)


async def test_a_redirect_is_not_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    with HostileServer([reply(302, b"", Location="http://elsewhere.test/steal")]) as server:
        with pytest.raises(KlingAPIError) as caught:
            await async_hook(monkeypatch, server, max_retries=0).aget_task("task-1")
        assert len(server.requests) == 1
    assert caught.value.status_code == 302


async def test_a_refused_connection_proves_the_query_was_not_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    set_connection(monkeypatch, "kling_refused", host=f"http://127.0.0.1:{port}", extra={"max_retries": 1})
    sleeps = Sleeps()
    hook = make_hook(sleeps, "kling_refused")
    with pytest.raises(KlingTransportError) as caught:
        await hook.aget_task("task-1")
    assert not caught.value.sent
    assert len(sleeps.calls) == 1  # retried within the budget
    assert API_KEY not in str(caught.value)
