"""KlingHook over real HTTP against the local ModelVerse simulator: retries, billing safety, downloads."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_kling.constants import DEFAULT_MAX_IN_FLIGHT
from airflow_provider_kling.exceptions import (
    KlingAuthError,
    KlingNotFoundError,
    KlingRateLimitError,
    KlingResultDownloadError,
    KlingResultExpiredError,
    KlingServerError,
    KlingSubmitUncertainError,
    KlingTaskCreationError,
    KlingTransportError,
)
from airflow_provider_kling.hooks import _clients
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.models import KlingTask, KlingVideoRequest, TaskStatus
from airflow_provider_kling.testing.simulator import result_video

from ._support import Sleeps, make_hook, set_connection

if TYPE_CHECKING:
    from airflow_provider_kling.testing import KlingSimulator

BODY: dict[str, Any] = {
    "model": "kling-v3-omni",
    "input": {"prompt": "A paper boat drifts down a rainy street"},
    "parameters": {"mode": "std", "aspect_ratio": "9:16", "duration": 5, "external_task_id": "sim-ext-1"},
}
REQUEST = KlingVideoRequest.model_validate(BODY)


@pytest.fixture
def sim(kling_simulator: KlingSimulator, kling_connection: str) -> KlingSimulator:
    return kling_simulator


@pytest.fixture
def hook(sim: KlingSimulator, sleeps: Sleeps) -> Any:
    with make_hook(sleeps, "kling_default") as kling_hook:
        yield kling_hook


def wait_until(condition: Any, seconds: float = 5.0) -> bool:
    """Poll ``condition`` every 20 ms for at most ``seconds`` (a bounded loop)."""
    for _ in range(int(seconds / 0.02)):
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


# -- the happy path -------------------------------------------------------------------------------------


def test_submit_poll_and_download(sim: KlingSimulator, hook: KlingHook) -> None:
    task_id = hook.submit_task(REQUEST)
    assert sim.submitted == [REQUEST.to_api_body()]
    first = hook.get_task(task_id)
    assert first.status in (TaskStatus.PENDING, TaskStatus.RUNNING)
    hook.sleep = time.sleep  # real polling now: tasks take 0.3 s
    task = hook.wait_for_task(task_id, poll_interval=0.05, timeout=10)
    assert task.status is TaskStatus.SUCCESS
    assert task.usage_seconds == 5
    with hook.stream_result(task.urls[0], kling_task_id=task_id) as result:
        assert result.total == len(result_video("9:16"))
        data = b"".join(result)
    assert data == result_video("9:16")
    assert sim.requests["submit"] == 1


def test_wait_returns_a_failed_task(sim: KlingSimulator, hook: KlingHook) -> None:
    sim.fail_next_tasks(1, message="content policy")
    task_id = hook.submit_task(BODY)
    hook.sleep = time.sleep
    task = hook.wait_for_task(task_id, poll_interval=0.05, timeout=10)
    assert (task.status, task.error_message) == (TaskStatus.FAILURE, "content policy")


def test_unknown_task(hook: KlingHook) -> None:
    with pytest.raises(KlingNotFoundError) as info:
        hook.get_task("0" * 32)
    assert info.value.request_id  # the simulator's X-Request-Id
    assert info.value.vendor_code == "task_not_found"


def test_task_creation_error_surfaced(sim: KlingSimulator, hook: KlingHook) -> None:
    hook.submit_task(BODY)
    with pytest.raises(KlingTaskCreationError, match="external_task_id") as info:
        hook.submit_task(BODY)  # the same external_task_id again: refused, not retried
    assert info.value.vendor_code == "006001099"
    assert sim.requests["submit"] == 2
    assert len(sim.submitted) == 1


# -- submit: retried only where nothing was created -----------------------------------------------------


def test_submit_retried_on_429_creates_one_task(sim: KlingSimulator, hook: KlingHook, sleeps: Sleeps) -> None:
    sim.inject_fault("submit", "rate_limit", retry_after=2)
    task_id = hook.submit_task(REQUEST)
    assert len(sim.submitted) == 1
    assert sim.requests["submit"] == 2
    assert sleeps.calls == [2.0]
    assert sim.tasks[0].task_id == task_id


def test_submit_rate_limited_beyond_budget(sim: KlingSimulator, hook: KlingHook) -> None:
    sim.inject_fault("submit", "rate_limit", times=3, retry_after=0)
    with pytest.raises(KlingRateLimitError) as info:
        hook.submit_task(REQUEST, max_retries=2)
    assert info.value.vendor_code == "006001094"
    assert sim.requests["submit"] == 3
    assert sim.submitted == []


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        pytest.param("server_error", {"status": 500}, id="500"),
        pytest.param("server_error", {"status": 503, "code": "006001095"}, id="503-006001095"),
        pytest.param("html_error", {"status": 502}, id="html-502"),
        pytest.param("malformed_json", {}, id="malformed-json"),
        pytest.param("reset", {}, id="reset"),
    ],
)
def test_submit_fault_after_create_never_pays_twice(
    sim: KlingSimulator, hook: KlingHook, kind: str, options: dict[str, Any]
) -> None:
    sim.inject_fault("submit", kind, after_create=True, **options)  # type: ignore[arg-type]
    with pytest.raises(KlingSubmitUncertainError, match="sim-ext-1") as info:
        hook.submit_task(REQUEST)
    assert info.value.external_task_id == "sim-ext-1"
    assert sim.requests["submit"] == 1
    assert len(sim.submitted) == 1
    assert [task.external_task_id for task in sim.find_tasks(external_task_id="sim-ext-1")] == ["sim-ext-1"]


@pytest.mark.parametrize("kind", ["server_error", "html_error", "reset"])
def test_submit_fault_before_create_is_still_uncertain(
    sim: KlingSimulator, hook: KlingHook, kind: str
) -> None:
    sim.inject_fault("submit", kind)  # type: ignore[arg-type]
    with pytest.raises(KlingSubmitUncertainError):
        hook.submit_task(REQUEST)
    assert sim.requests["submit"] == 1
    assert sim.submitted == []


def test_submit_read_timeout_is_not_retried(sim: KlingSimulator, sleeps: Sleeps) -> None:
    sim.inject_fault("submit", "slow", delay=0.5)
    with (
        make_hook(sleeps, "kling_default", timeout=0.2) as hook,
        pytest.raises(KlingSubmitUncertainError) as info,
    ):
        hook.submit_task(REQUEST)
    cause = info.value.__cause__
    assert isinstance(cause, KlingTransportError)
    assert cause.sent is True
    assert "ReadTimeout" in str(cause)
    # The server goes on and creates (bills) the task once; the hook never sent a second submit.
    assert wait_until(lambda: len(sim.submitted) == 1)
    assert sim.requests["submit"] == 1
    assert sleeps.calls == []


def test_submit_connect_error_is_retried(
    sim: KlingSimulator, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket_bound_but_closed() as dead_url:
        set_connection(monkeypatch, "kling_dead", host=dead_url, password=sim.api_key)
        with make_hook(sleeps, "kling_dead") as hook, pytest.raises(KlingTransportError) as info:
            hook.submit_task(REQUEST, max_retries=2)
    assert info.value.sent is False
    assert len(sleeps.calls) == 2


class socket_bound_but_closed:
    """A URL on 127.0.0.1 where nothing listens (the port was bound once, then released)."""

    def __enter__(self) -> str:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc_info: object) -> None:
        return None


# -- status queries: every retryable fault is ridden out ------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        pytest.param("rate_limit", {"retry_after": 0}, id="rate-limit"),
        pytest.param("server_error", {"status": 503}, id="503"),
        pytest.param("server_error", {"status": 500, "code": "006001095"}, id="500-006001095"),
        pytest.param("html_error", {"status": 502}, id="html-502"),
        pytest.param("malformed_json", {}, id="malformed-json"),
        pytest.param("reset", {}, id="reset"),
    ],
)
def test_status_faults_are_retried(
    sim: KlingSimulator, hook: KlingHook, kind: str, options: dict[str, Any]
) -> None:
    task_id = hook.submit_task(REQUEST)
    sim.inject_fault("status", kind, times=2, **options)  # type: ignore[arg-type]
    assert hook.get_task(task_id).task_id == task_id
    assert sim.requests["status"] == 3


def test_status_read_timeout_is_retried(sim: KlingSimulator, sleeps: Sleeps) -> None:
    with make_hook(sleeps, "kling_default", timeout=0.2) as hook:
        task_id = hook.submit_task(REQUEST)
        sim.inject_fault("status", "slow", delay=0.6)
        assert hook.get_task(task_id).task_id == task_id
    assert sim.requests["status"] == 2


def test_status_server_error_exhausts_budget(sim: KlingSimulator, hook: KlingHook) -> None:
    task_id = hook.submit_task(REQUEST)
    sim.inject_fault(
        "status", "server_error", times=10, status=504, code="006001095", message="upstream down"
    )
    with pytest.raises(KlingServerError, match="upstream down") as info:
        hook.get_task(task_id, max_retries=3)
    assert (info.value.status_code, info.value.vendor_code) == (504, "006001095")
    assert sim.requests["status"] == 4


def test_bad_key_is_one_call(sim: KlingSimulator, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "kling_badkey", host=sim.base_url, password="not-the-key")
    with make_hook(sleeps, "kling_badkey") as hook:
        with pytest.raises(KlingAuthError) as info:
            hook.get_task("0" * 32)
        assert info.value.status_code == 401
        with pytest.raises(KlingAuthError):
            hook.submit_task(REQUEST)
    assert sim.requests["status"] == 1
    assert sim.requests["submit"] == 1
    assert sim.submitted == []


# -- test_connection ------------------------------------------------------------------------------------


def test_test_connection_good_key(sim: KlingSimulator) -> None:
    ok, message = KlingHook("kling_default").test_connection()
    assert ok is True
    assert sim.base_url in message
    assert sim.api_key not in message


def test_test_connection_bad_key(sim: KlingSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "kling_badkey", host=sim.base_url, password="wrong-key-123")
    ok, message = KlingHook("kling_badkey").test_connection()
    assert ok is False
    assert "rejected the API key" in message
    assert "wrong-key-123" not in message


# -- stream_result --------------------------------------------------------------------------------------


def finished_task(sim: KlingSimulator, hook: KlingHook) -> KlingTask:
    sim.task_seconds = 0
    return hook.get_task(hook.submit_task(REQUEST))


def test_stream_result_resumes_a_reset_with_range(sim: KlingSimulator, hook: KlingHook) -> None:
    task = finished_task(sim, hook)
    sim.inject_fault("result", "reset")
    with hook.stream_result(task.urls[0], kling_task_id=task.task_id, retry_delay=0) as result:
        data = b"".join(result)
    assert data == result_video("9:16")
    assert result.attempts == 2


def test_stream_result_expired(sim: KlingSimulator, hook: KlingHook) -> None:
    task = finished_task(sim, hook)
    sim.inject_fault("result", "expired")
    with (
        pytest.raises(KlingResultExpiredError, match="expired") as info,
        hook.stream_result(task.urls[0], kling_task_id=task.task_id),
    ):
        pass
    assert info.value.status_code == 403


def test_stream_result_expired_by_time(sim: KlingSimulator, hook: KlingHook) -> None:
    sim.result_ttl_seconds = 60
    task = finished_task(sim, hook)
    sim.advance_time(120)
    with (
        pytest.raises(KlingResultExpiredError),
        hook.stream_result(task.urls[0], kling_task_id=task.task_id),
    ):
        pass


def test_stream_result_truncated_body_is_resumed(sim: KlingSimulator, hook: KlingHook) -> None:
    task = finished_task(sim, hook)
    sim.inject_fault("result", "truncate")
    with hook.stream_result(task.urls[0], kling_task_id=task.task_id, retry_delay=0) as result:
        data = b"".join(result)
    assert data == result_video("9:16")
    assert result.attempts == 2


def test_stream_result_truncated_every_time_is_an_error(sim: KlingSimulator, hook: KlingHook) -> None:
    task = finished_task(sim, hook)
    sim.inject_fault("result", "truncate", times=3)
    received = bytearray()

    def download() -> None:
        with hook.stream_result(
            task.urls[0], kling_task_id=task.task_id, retry_delay=0, max_attempts=2
        ) as result:
            for chunk in result:
                received.extend(chunk)

    with pytest.raises(KlingResultDownloadError, match="failed after 2 attempts"):
        download()
    assert 0 < len(received) < len(result_video("9:16"))


# -- async, over real sockets ---------------------------------------------------------------------------


async def test_many_hooks_share_one_connection(sim: KlingSimulator, hook: KlingHook) -> None:
    task_id = hook.submit_task(REQUEST)
    before = sim.stats()["connections"]["total"]
    for _ in range(30):  # thirty triggers, each with its own hook, polling in turn
        await KlingHook("kling_default").aget_task(task_id)
    assert sim.stats()["connections"]["total"] - before <= 1
    assert sim.requests["status"] == 30


async def test_concurrent_polls_are_bounded_by_the_pool(sim: KlingSimulator, hook: KlingHook) -> None:
    task_id = hook.submit_task(REQUEST)
    sim.inject_fault("status", "slow", times=120, delay=0.1)  # hold every poll open at once
    hooks = [KlingHook("kling_default") for _ in range(120)]
    already_open = sim.stats()["connections"]["open"]  # this test's submit, earlier tests' closing ones
    tasks = await asyncio.gather(*(h.aget_task(task_id) for h in hooks))
    assert {task.task_id for task in tasks} == {task_id}
    limit = DEFAULT_MAX_IN_FLIGHT
    assert limit // 2 <= sim.stats()["connections"]["max_open"] - already_open <= limit


def test_async_client_closed_with_its_loop_without_warnings(sim: KlingSimulator) -> None:
    with KlingHook("kling_default") as sync_hook:
        task_id = sync_hook.submit_task(REQUEST)

    async def poll() -> _clients.AsyncSender:
        await asyncio.gather(*(KlingHook("kling_default").aget_task(task_id) for _ in range(5)))
        return (await _clients.shared_async_pool())[0]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = asyncio.run(poll())
        second = asyncio.run(poll())
        gc.collect()
    assert first is not second
    assert first.is_closed
    assert second.is_closed
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert wait_until(lambda: sim.stats()["connections"]["open"] == 0)


def test_loops_in_two_threads_never_share_a_client(sim: KlingSimulator) -> None:
    with KlingHook("kling_default") as sync_hook:
        task_id = sync_hook.submit_task(REQUEST)
    seen: dict[str, tuple[_clients.AsyncSender, _clients.AsyncSender]] = {}
    errors: list[BaseException] = []

    async def poll(name: str) -> None:
        hook = KlingHook("kling_default")
        for _ in range(10):
            await hook.aget_task(task_id)
            await asyncio.sleep(0)
        seen[name] = ((await _clients.shared_async_pool())[0], (await _clients.shared_async_pool())[0])

    def run(name: str) -> None:
        try:
            asyncio.run(poll(name))
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert seen["a"][0] is seen["a"][1]
    assert seen["a"][0] is not seen["b"][0]
    assert seen["a"][0].is_closed
    assert seen["b"][0].is_closed
    assert sim.requests["status"] == 20
