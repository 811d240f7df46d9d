from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx

from airflow_provider_kling.hooks._errors import _NOT_SENT, Answer, AnswerReader, SendError
from airflow_provider_kling.hooks._retry import RetryPolicy
from airflow_provider_kling.hooks._settings import USER_AGENT
from airflow_provider_kling.hooks.kling import KlingHook

if TYPE_CHECKING:
    from collections.abc import Mapping, MutableMapping

    import pytest

#: A distinctive key: any text that contains it has leaked it.
API_KEY = "sk-LEAKCHECK-7f3a9c1e5b2d4f60"
#: The base URL of the respx-mocked API.
BASE_URL = "https://kling.test"
#: Connection id of the respx-mocked API.
CONN_ID = "kling_hooktest"


def set_connection(
    monkeypatch: pytest.MonkeyPatch,
    conn_id: str = CONN_ID,
    *,
    host: str | None = BASE_URL,
    password: str | None = API_KEY,
    port: int | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Define a Kling connection as an ``AIRFLOW_CONN_<ID>`` environment variable (JSON)."""
    conn: dict[str, Any] = {"conn_type": "kling"}
    if host is not None:
        conn["host"] = host
    if password is not None:
        conn["password"] = password
    if port is not None:
        conn["port"] = port
    if extra is not None:
        conn["extra"] = extra
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


class Sleeps:
    """Records the delays a hook asked to sleep, instead of sleeping (sync and async)."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.calls.append(seconds)


def make_hook(sleeps: Sleeps, conn_id: str = CONN_ID, **kwargs: Any) -> KlingHook:
    """A hook that records its sleeps and draws the jitter's midpoint (0.5) every time."""
    hook = KlingHook(conn_id, **kwargs)
    hook.sleep = sleeps
    hook.async_sleep = sleeps.asleep
    hook.retry_policy = RetryPolicy(jitter=lambda: 0.5)
    return hook


class Clock:
    """A fake monotonic clock whose ``sleep`` advances it (for ``wait_for_task``)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def status_body(task_id: str = "task-1", status: str = "Running", **output: Any) -> dict[str, Any]:
    """A status response body as the API documents it (a ``Success`` has a result URL unless told)."""
    if status == "Success":
        output.setdefault("urls", [f"https://cdn.test/results/{task_id}/1.mp4"])
    return {
        "output": {"task_id": task_id, "task_status": status, "submit_time": 1756959000, **output},
        "usage": {"duration": 5},
        "request_id": "req-status",
    }


class LogCapture:
    """Everything logged during a test, through stdlib logging and through structlog (``self.log``)."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog
        self.structlog_entries: list[MutableMapping[str, Any]] = []

    def texts(self) -> list[str]:
        lines = [record.getMessage() for record in self._caplog.records]
        lines += [json.dumps(entry, default=repr) for entry in self.structlog_entries]
        return lines

    def text(self) -> str:
        return "\n".join(self.texts())


class HttpxSender:
    """
    The hook's async shell over ``httpx.AsyncClient``, so that ``respx`` sees async requests (tests only).

    The hook's own async shell is aiohttp (``_clients.AiohttpSender``), which ``respx`` cannot mock; the
    hostile-server and simulator tests run that one over real sockets.
    """

    def __init__(self) -> None:
        self.client = httpx.AsyncClient(headers={"User-Agent": USER_AGENT}, follow_redirects=False)

    async def fetch(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None,
        seconds: float,
        what: str,
    ) -> Answer:
        try:
            async with self.client.stream(
                method, url, headers=headers, params=params, timeout=seconds
            ) as response:
                reader = AnswerReader(response.status_code, what=what)
                async for chunk in response.aiter_bytes():
                    reader.add(chunk)
                return reader.answer(response.headers)
        except httpx.RequestError as error:
            raise SendError(error, sent=not isinstance(error, _NOT_SENT)) from error

    @property
    def is_closed(self) -> bool:
        return self.client.is_closed

    async def aclose(self) -> None:
        await self.client.aclose()


def send_async_through_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every loop's new shared async sender an :class:`HttpxSender` (for ``respx``)."""
    from airflow_provider_kling.hooks import _clients

    monkeypatch.setattr(_clients, "new_async_sender", HttpxSender)
