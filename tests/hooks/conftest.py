from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import respx
import structlog

from ._support import BASE_URL, LogCapture, Sleeps, make_hook, send_async_through_httpx, set_connection

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_kling.hooks.kling import KlingHook


@pytest.fixture
def connection(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def hook(connection: None, sleeps: Sleeps) -> Iterator[KlingHook]:
    with make_hook(sleeps) as kling_hook:
        yield kling_hook


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[respx.MockRouter]:
    """The mocked API: every request must hit a route (nothing reaches the network), async ones too."""
    send_async_through_httpx(monkeypatch)
    with respx.mock(base_url=BASE_URL, assert_all_called=False, assert_all_mocked=True) as router:
        yield router


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[LogCapture]:
    caplog.set_level("DEBUG")
    capture = LogCapture(caplog)
    with structlog.testing.capture_logs() as entries:
        capture.structlog_entries = entries
        yield capture
