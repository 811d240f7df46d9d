"""KlingTaskTrigger: serialization, the one event it yields for each outcome, and what it never leaks."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import math
import socket
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
import pytest
import respx
from airflow.providers.common.compat.module_loading import import_string
from hooks._support import send_async_through_httpx

from airflow_provider_kling.exceptions import (
    KlingError,
    KlingTaskFailedError,
    KlingTaskNotReadyError,
    KlingTaskTimeoutError,
    KlingTransportError,
)
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.models import KlingTask, TaskStatus
from airflow_provider_kling.triggers.kling import (
    MAX_POLL_JITTER_SECONDS,
    POLL_TICK_SECONDS,
    KlingTaskTrigger,
    finished_task_from_event,
    first_poll_delay,
    next_poll_delay,
    poll_start,
    poll_tick,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from airflow_provider_kling.testing import KlingSimulator

API_KEY = "sk-trigger-unit-secret-0123456789"
BASE_URL = "http://kling.test"
STATUS_URL = f"{BASE_URL}/v1/tasks/status"


@pytest.fixture
def kling_conn(monkeypatch: pytest.MonkeyPatch) -> None:
    # max_retries 0: the hook does not retry, so these tests see the trigger's own riding-out.
    monkeypatch.setenv(
        "AIRFLOW_CONN_KLING_DEFAULT",
        json.dumps(
            {"conn_type": "kling", "host": BASE_URL, "password": API_KEY, "extra": {"max_retries": 0}}
        ),
    )


@pytest.fixture
def api(kling_conn: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[respx.MockRouter]:
    send_async_through_httpx(monkeypatch)
    with respx.mock(assert_all_called=False) as router:
        yield router


def status(task_id: str, task_status: str, **output: Any) -> httpx.Response:
    body: dict[str, Any] = {
        "output": {"task_id": task_id, "task_status": task_status, "submit_time": 1756959000, **output},
        "request_id": "req-1",
    }
    if task_status in ("Success", "Failure"):
        body["usage"] = {"duration": 5}
        body["output"].setdefault("finish_time", 1756959050)
    return httpx.Response(200, json=body)


SUCCESS_URL = "https://cdn.example/video-1.mp4"


async def events_of(trigger: KlingTaskTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


def test_serialize_round_trip_keeps_every_argument_and_the_deadline() -> None:
    trigger = KlingTaskTrigger(kling_task_id="task-1", kling_conn_id="my_kling", poll_interval=5, timeout=60)
    classpath, kwargs = trigger.serialize()

    assert classpath == "airflow_provider_kling.triggers.kling.KlingTaskTrigger"
    assert set(kwargs) == {"kling_task_id", "kling_conn_id", "poll_interval", "timeout", "deadline"}
    assert kwargs["deadline"] == pytest.approx(time.time() + 60, abs=5)
    rebuilt = import_string(classpath)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)


def test_serialized_kwargs_hold_only_ids_and_numbers_never_the_key(kling_conn: None) -> None:
    _, kwargs = KlingTaskTrigger(kling_task_id="task-1").serialize()

    assert API_KEY not in json.dumps(kwargs)
    assert all(isinstance(value, str | float) for value in kwargs.values())
    assert {key for key, value in kwargs.items() if isinstance(value, str)} == {
        "kling_task_id",
        "kling_conn_id",
    }


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"kling_task_id": ""}, "kling_task_id"),
        ({"kling_task_id": "t", "poll_interval": 0}, "poll_interval"),
        ({"kling_task_id": "t", "timeout": -1}, "timeout"),
    ],
)
def test_rejects_unusable_arguments(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KlingTaskTrigger(**arguments)


async def test_success_yields_one_event_with_the_finished_task(api: respx.MockRouter) -> None:
    route = api.get(STATUS_URL).mock(
        side_effect=[
            status("task-1", "Pending"),
            status("task-1", "Running"),
            status("task-1", "Success", urls=[SUCCESS_URL]),
        ]
    )
    trigger = KlingTaskTrigger(kling_task_id="task-1", poll_interval=0.01, timeout=30)

    events = await events_of(trigger)

    assert events == [
        {
            "status": "success",
            "kling_task_id": "task-1",
            "urls": [SUCCESS_URL],
            "usage_seconds": 5,
            "submit_time": 1756959000,
            "finish_time": 1756959050,
        }
    ]
    assert route.call_count == 3
    request = route.calls.last.request
    assert request.url.params["task_id"] == "task-1"
    assert request.headers["Authorization"] == API_KEY


async def test_failed_task_yields_failure_with_the_vendor_message(api: respx.MockRouter) -> None:
    api.get(STATUS_URL).mock(
        side_effect=[status("task-2", "Running"), status("task-2", "Failure", error_message="content policy")]
    )

    events = await events_of(KlingTaskTrigger(kling_task_id="task-2", poll_interval=0.01, timeout=30))

    assert events == [
        {"status": "failure", "kling_task_id": "task-2", "message": "content policy", "usage_seconds": 5}
    ]


async def test_timeout_yields_an_error_event_with_the_last_status(api: respx.MockRouter) -> None:
    route = api.get(STATUS_URL).mock(return_value=status("task-3", "Running"))

    events = await events_of(KlingTaskTrigger(kling_task_id="task-3", poll_interval=0.02, timeout=0.1))

    assert len(events) == 1
    event = events[0]
    assert event["status"] == "error"
    assert event["reason"] == "timeout"
    assert event["last_status"] == "Running"
    assert event["timeout"] == 0.1
    assert "did not finish within 0.1 s" in event["message"]
    # Bounded: at most about timeout / poll_interval polls, never a busy loop (on a loaded machine the first
    # query, which also fetches the connection, may take the whole 0.1 s: then it is the only one).
    assert 1 <= route.call_count <= 8


async def test_deadline_is_kept_across_a_restart_of_the_trigger(api: respx.MockRouter) -> None:
    route = api.get(STATUS_URL).mock(return_value=status("task-4", "Running"))
    _, kwargs = KlingTaskTrigger(kling_task_id="task-4", poll_interval=10, timeout=3600).serialize()
    kwargs["deadline"] = time.time() - 1  # the wait ran out while the trigger was moving

    events = await events_of(KlingTaskTrigger(**kwargs))

    assert [event["reason"] for event in events] == ["timeout"]
    assert route.call_count == 1


@pytest.mark.parametrize(
    "outage",
    [
        httpx.Response(503, json={"error": {"message": "busy", "code": "006001095"}}),
        httpx.Response(429, json={"code": "006001094", "message": "task resources insufficient"}),
        httpx.ConnectError("connection refused"),
        httpx.Response(200, text="<html>gateway</html>"),
    ],
    ids=["503", "429", "connect-error", "malformed-body"],
)
async def test_transient_outage_is_ridden_out_until_success(
    api: respx.MockRouter, outage: httpx.Response | Exception
) -> None:
    route = api.get(STATUS_URL).mock(
        side_effect=[outage, outage, outage, status("task-5", "Success", urls=[SUCCESS_URL])]
    )

    events = await events_of(KlingTaskTrigger(kling_task_id="task-5", poll_interval=0.01, timeout=30))

    assert [event["status"] for event in events] == ["success"]
    assert route.call_count == 4


async def test_outage_longer_than_the_timeout_ends_in_a_timeout(api: respx.MockRouter) -> None:
    api.get(STATUS_URL).mock(return_value=httpx.Response(503))

    events = await events_of(KlingTaskTrigger(kling_task_id="task-6", poll_interval=0.02, timeout=0.1))

    assert [(event["status"], event["reason"], event["last_status"]) for event in events] == [
        ("error", "timeout", None)
    ]


@pytest.mark.parametrize(
    ("response", "fragment"),
    [
        (httpx.Response(401, json={"error": {"message": "invalid api key"}}), "invalid api key"),
        (httpx.Response(404, json={"error": {"message": "task not found"}}), "task not found"),
        (httpx.Response(400, json={"code": "bad", "message": "bad task_id"}), "bad task_id"),
    ],
    ids=["401", "404", "400"],
)
async def test_non_retryable_api_error_ends_at_once(
    api: respx.MockRouter,
    response: httpx.Response,
    fragment: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    route = api.get(STATUS_URL).mock(return_value=response)
    caplog.set_level(logging.DEBUG)

    events = await events_of(KlingTaskTrigger(kling_task_id="task-7", poll_interval=0.01, timeout=30))

    assert len(events) == 1
    assert events[0]["status"] == "error"
    assert events[0]["reason"] == "api_error"
    assert fragment in events[0]["message"]
    assert route.call_count == 1
    assert API_KEY not in json.dumps(events)
    logged = caplog.text + capsys.readouterr().out
    assert "refused" in logged
    assert API_KEY not in logged


async def test_unknown_status_keeps_polling(api: respx.MockRouter) -> None:
    route = api.get(STATUS_URL).mock(
        side_effect=[status("task-8", "Expired"), status("task-8", "Success", urls=[SUCCESS_URL])]
    )

    events = await events_of(KlingTaskTrigger(kling_task_id="task-8", poll_interval=0.01, timeout=30))

    assert [event["status"] for event in events] == ["success"]
    assert route.call_count == 2


async def test_an_unexpected_error_still_ends_in_exactly_one_event(
    kling_conn: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: object, task_id: str, **kwargs: Any) -> None:
        raise RuntimeError("surprise")

    monkeypatch.setattr("airflow_provider_kling.hooks.kling.KlingHook.aget_task", broken)

    events = await events_of(KlingTaskTrigger(kling_task_id="task-9", poll_interval=0.01, timeout=30))

    assert [(event["reason"], event["message"]) for event in events] == [
        ("api_error", "RuntimeError: surprise")
    ]


async def test_status_changes_are_logged_once_each_with_the_elapsed_time(
    api: respx.MockRouter, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    api.get(STATUS_URL).mock(
        side_effect=[
            status("task-10", "Pending"),
            status("task-10", "Pending"),
            status("task-10", "Running"),
            status("task-10", "Running"),
            status("task-10", "Success", urls=[SUCCESS_URL]),
        ]
    )
    caplog.set_level(logging.INFO)

    await events_of(KlingTaskTrigger(kling_task_id="task-10", poll_interval=0.01, timeout=30))

    # One of the two holds the lines: pytest's capture, or stdout where Airflow's structlog writes (on
    # Airflow 3.0 both do).
    logged = caplog.text if "task-10 is" in caplog.text else capsys.readouterr().out
    story = [line for line in logged.splitlines() if "task-10 is" in line]
    assert [line.split(" is ")[1].split(" after ")[0] for line in story] == ["Pending", "Running", "Success"]
    assert all("s of waiting" in line for line in story)


def test_finished_task_from_a_success_event_is_the_as_result_dict() -> None:
    event = {
        "status": "success",
        "kling_task_id": "t",
        "urls": [SUCCESS_URL],
        "usage_seconds": 5,
        "submit_time": 1,
        "finish_time": 2,
    }

    assert finished_task_from_event(event) == {
        "kling_task_id": "t",
        "status": "Success",
        "urls": [SUCCESS_URL],
        "usage_seconds": 5,
        "submit_time": 1,
        "finish_time": 2,
    }


@pytest.mark.parametrize(
    ("event", "error", "match"),
    [
        (
            {"status": "failure", "kling_task_id": "t", "message": "nsfw"},
            KlingTaskFailedError,
            "t failed: nsfw",
        ),
        (
            {
                "status": "error",
                "kling_task_id": "t",
                "reason": "timeout",
                "timeout": 9.0,
                "last_status": "Running",
            },
            KlingTaskTimeoutError,
            r"within 9 s \(last status Running\)",
        ),
        (
            {"status": "error", "kling_task_id": "t", "reason": "api_error", "message": "HTTP 401"},
            KlingError,
            "401",
        ),
        ({"status": "weird"}, KlingError, "Unexpected event"),
    ],
    ids=["failure", "timeout", "api_error", "unknown"],
)
def test_finished_task_from_other_events_raises(
    event: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        finished_task_from_event(event)


# -- against the simulator (real HTTP on 127.0.0.1) ---------------------------------------------------------


def submit_tasks(simulator: KlingSimulator, count: int) -> list[str]:
    with KlingHook() as hook:
        return [hook.submit_task(TEXT_TO_VIDEO) for _ in range(count)]


TEXT_TO_VIDEO = {
    "model": "kling-v3-omni",
    "input": {"prompt": "a lighthouse"},
    "parameters": {"aspect_ratio": "16:9"},
}


async def test_simulator_success_event(kling_simulator: KlingSimulator, kling_connection: str) -> None:
    [task_id] = submit_tasks(kling_simulator, 1)

    events = await events_of(KlingTaskTrigger(kling_task_id=task_id, poll_interval=0.05, timeout=30))

    [event] = events
    assert event["status"] == "success"
    assert event["kling_task_id"] == task_id
    assert event["urls"] == list(kling_simulator.get_task(task_id).urls)
    assert event["usage_seconds"] == 5
    assert event["finish_time"] >= event["submit_time"]
    assert kling_simulator.api_key not in json.dumps(events)


async def test_simulator_failure_event_carries_the_vendor_message(
    kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    kling_simulator.fail_next_tasks(1, message="R0 simulated: the model refused the prompt")
    [task_id] = submit_tasks(kling_simulator, 1)

    events = await events_of(KlingTaskTrigger(kling_task_id=task_id, poll_interval=0.05, timeout=30))

    assert [(event["status"], event["message"]) for event in events] == [
        ("failure", "R0 simulated: the model refused the prompt")
    ]


async def test_simulator_timeout_event(kling_simulator: KlingSimulator, kling_connection: str) -> None:
    kling_simulator.task_seconds = 600
    [task_id] = submit_tasks(kling_simulator, 1)

    events = await events_of(KlingTaskTrigger(kling_task_id=task_id, poll_interval=0.05, timeout=0.2))

    assert [(event["status"], event["reason"]) for event in events] == [("error", "timeout")]
    assert events[0]["last_status"] in ("Pending", "Running")
    assert 2 <= kling_simulator.requests["status"] <= 10


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("server_error", {"status": 503}),
        ("reset", {}),
        ("html_error", {}),
        ("rate_limit", {"retry_after": 0}),
    ],
)
async def test_simulator_outage_is_ridden_out(
    kling_simulator: KlingSimulator, monkeypatch: pytest.MonkeyPatch, kind: str, options: dict[str, Any]
) -> None:
    # No hook retries: the trigger itself must keep polling through the outage.
    conn = {"conn_type": "kling", "host": kling_simulator.base_url, "password": kling_simulator.api_key}
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", json.dumps({**conn, "extra": {"max_retries": 0}}))
    [task_id] = submit_tasks(kling_simulator, 1)
    kling_simulator.inject_fault("status", kind, times=4, **options)  # type: ignore[arg-type]

    events = await events_of(KlingTaskTrigger(kling_task_id=task_id, poll_interval=0.05, timeout=30))

    assert [event["status"] for event in events] == ["success"]
    assert kling_simulator.stats()["faults_fired"] == {f"status:{kind}": 4}


async def test_simulator_wrong_key_is_an_api_error(
    kling_simulator: KlingSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {"conn_type": "kling", "host": kling_simulator.base_url, "password": "sk-wrong-key-0123456789"}
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", json.dumps(conn))

    events = await events_of(KlingTaskTrigger(kling_task_id="no-such-task", poll_interval=0.05, timeout=30))

    assert [(event["status"], event["reason"]) for event in events] == [("error", "api_error")]
    assert "401" in events[0]["message"]
    assert "sk-wrong-key-0123456789" not in json.dumps(events)


class BlockingCallCounter:
    """Counts calls of blocking functions made on the event loop's thread (where none may happen)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, loop_thread: int) -> None:
        self.calls: Counter[str] = Counter()
        self.loop_thread = loop_thread
        targets = {
            "time.sleep": (time, "sleep"),
            "KlingHook.get_connection": (KlingHook, "get_connection"),
            "KlingHook.get_conn": (KlingHook, "get_conn"),
            "KlingHook.get_task": (KlingHook, "get_task"),
            "httpx.Client.send": (httpx.Client, "send"),
            "socket.getaddrinfo": (socket, "getaddrinfo"),
            "socket.create_connection": (socket, "create_connection"),
        }
        for name, (owner, attribute) in targets.items():
            counted = self._counting(name, getattr(owner, attribute))
            if isinstance(inspect.getattr_static(owner, attribute), classmethod):
                # Bound already (getattr): kept a plain callable on the class, as a classmethod is called.
                counted = staticmethod(counted)
            monkeypatch.setattr(owner, attribute, counted)

    def _counting(self, name: str, function: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == self.loop_thread:
                self.calls[name] += 1
            return function(*args, **kwargs)

        return counted


async def test_500_triggers_share_one_pool_and_never_block_the_loop(
    kling_simulator: KlingSimulator, kling_connection: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    count, polls_each, bound = 500, 2, 16
    kling_simulator.task_seconds = 3600  # the test finishes the tasks by moving the simulator's clock
    task_ids = submit_tasks(kling_simulator, count)
    # The connection's bound on requests in flight (extra max_in_flight) is what caps the sockets.
    conn = {
        "conn_type": "kling",
        "host": kling_simulator.base_url,
        "password": kling_simulator.api_key,
        "extra": {"max_in_flight": bound},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{kling_connection.upper()}", json.dumps(conn))
    sessions: list[aiohttp.ClientSession] = []
    original_init = aiohttp.ClientSession.__init__

    def counting_init(self: aiohttp.ClientSession, *args: Any, **kwargs: Any) -> None:
        sessions.append(self)
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(aiohttp.ClientSession, "__init__", counting_init)
    blocking = BlockingCallCounter(monkeypatch, threading.get_ident())
    watchdog = LoopStallWatchdog(stall_seconds=1.0)
    triggers = [
        KlingTaskTrigger(kling_task_id=task_id, poll_interval=0.2, timeout=120) for task_id in task_ids
    ]
    connections_before = kling_simulator.stats()["connections"]["total"]

    async def finish_tasks_after_polls() -> None:
        while kling_simulator.requests["status"] < polls_each * count:  # noqa: ASYNC110 - another thread counts
            await asyncio.sleep(0.05)
        kling_simulator.advance_time(7200)

    async with watchdog:
        results, _ = await asyncio.wait_for(
            asyncio.gather(
                asyncio.gather(*(events_of(trigger) for trigger in triggers)), finish_tasks_after_polls()
            ),
            timeout=120,
        )

    assert [len(events) for events in results] == [1] * count
    assert {events[0]["status"] for events in results} == {"success"}
    assert sorted(events[0]["kling_task_id"] for events in results) == sorted(task_ids)
    assert len(sessions) == 1, "every trigger on the loop must share one aiohttp.ClientSession"
    stats = kling_simulator.stats()
    status_requests = stats["requests"]["status"]
    connections = stats["connections"]["total"] - connections_before
    assert status_requests >= (polls_each + 1) * count
    # One bounded pool: at most as many connections as status queries in flight, each reused many times.
    assert connections <= bound
    assert connections * 20 <= status_requests
    assert dict(blocking.calls) == {}
    assert watchdog.ticks > 10
    assert watchdog.stalls == []


class LoopStallWatchdog:
    """Ticks every 50 ms on the loop and records any gap longer than ``stall_seconds``: a blocked loop."""

    def __init__(self, *, stall_seconds: float) -> None:
        self.stall_seconds = stall_seconds
        self.ticks = 0
        self.stalls: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.05)
            self.ticks += 1
            if (gap := loop.time() - before) > self.stall_seconds:
                self.stalls.append(gap)

    async def __aenter__(self) -> LoopStallWatchdog:
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


# -- arguments that could never end a wait, and hostile hooks (issue 9, defects 2, 8 and 10) ---------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"poll_interval": math.nan}, "poll_interval"),
        ({"poll_interval": math.inf}, "poll_interval"),
        ({"poll_interval": 86401}, "poll_interval"),
        ({"poll_interval": True}, "poll_interval"),
        ({"timeout": math.nan}, "timeout"),
        ({"timeout": math.inf}, "timeout"),
        ({"timeout": 8 * 86400}, "timeout"),
        ({"deadline": math.nan}, "deadline"),
        ({"deadline": math.inf}, "deadline"),
    ],
    ids=str,
)
def test_rejects_numbers_that_could_never_end_the_wait(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KlingTaskTrigger(kling_task_id="t", **arguments)


@pytest.mark.parametrize(
    "bad_id",
    ["", "../../../escape", "task\nid", "tâche-1", "x" * 129, "a/b", " task", None, 42],
    ids=["empty", "dot-dot", "newline", "non-ascii", "too-long", "slash", "space", "none", "int"],
)
def test_rejects_a_malformed_task_id_naming_the_field(bad_id: Any) -> None:
    with pytest.raises(ValueError, match=r"^kling_task_id"):
        KlingTaskTrigger(kling_task_id=bad_id)


def test_a_deadline_further_than_the_timeout_is_held_to_the_timeout() -> None:
    trigger = KlingTaskTrigger(kling_task_id="t", timeout=60, deadline=time.time() + 10**6)

    assert trigger.deadline == pytest.approx(time.time() + 60, abs=5)


class FakeHook:
    """Stands in for :class:`KlingHook`: answers ``aget_task`` from a script and records the calls."""

    def __init__(self, answer: Callable[[str, float | None], KlingTask | Awaitable[KlingTask]]) -> None:
        self.answer = answer
        self.calls: list[dict[str, Any]] = []

    async def aget_task(
        self,
        task_id: str,
        *,
        max_retries: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the signature of KlingHook.aget_task
    ) -> KlingTask:
        self.calls.append({"task_id": task_id, "timeout": timeout})
        result = self.answer(task_id, timeout)
        return result if isinstance(result, KlingTask) else await result


def use_hook(monkeypatch: pytest.MonkeyPatch, hook: FakeHook) -> FakeHook:
    monkeypatch.setattr(KlingTaskTrigger, "_hook", lambda self: hook)
    return hook


def task(task_id: str, task_status: str, **fields: Any) -> KlingTask:
    return KlingTask(task_id=task_id, status=TaskStatus(task_status), **fields)


async def hang_forever(task_id: str, seconds: float | None) -> KlingTask:
    await asyncio.Event().wait()  # a status answer that never ends (a body trickling one byte at a time)
    raise AssertionError("unreachable")


async def hang_until_its_timeout(task_id: str, seconds: float | None) -> KlingTask:
    assert seconds is not None
    await asyncio.sleep(seconds)
    raise KlingTransportError(f"the status query took longer than {seconds:g} s", sent=True)


async def running_slowly(task_id: str, seconds: float | None) -> KlingTask:
    await asyncio.sleep(0.1)
    return task(task_id, "Running")


@pytest.mark.parametrize(
    "answer",
    [hang_forever, hang_until_its_timeout, running_slowly],
    ids=["hook-ignores-its-timeout", "hook-keeps-its-timeout", "status-never-ends"],
)
async def test_a_query_that_never_ends_cannot_outlive_the_triggers_timeout(
    monkeypatch: pytest.MonkeyPatch, answer: Any
) -> None:
    hook = use_hook(monkeypatch, FakeHook(answer))
    trigger = KlingTaskTrigger(kling_task_id="task-11", poll_interval=0.05, timeout=0.3)
    started = time.monotonic()

    events = await asyncio.wait_for(events_of(trigger), timeout=30)

    elapsed = time.monotonic() - started
    assert [(event["status"], event["reason"], event["timeout"]) for event in events] == [
        ("error", "timeout", 0.3)
    ]
    assert "task-11 did not finish within 0.3 s" in events[0]["message"]
    assert elapsed < 5, f"the trigger waited {elapsed:.1f} s with timeout=0.3"
    # The hook is told how long each query may take: never more than what is left of the wait.
    assert hook.calls
    assert all(call["timeout"] is not None and 0 < call["timeout"] <= 5 for call in hook.calls)


async def test_the_hook_is_given_the_remaining_time_of_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([task("task-12", "Running"), task("task-12", "Success", urls=[SUCCESS_URL])])
    hook = use_hook(monkeypatch, FakeHook(lambda task_id, timeout: next(answers)))

    events = await events_of(KlingTaskTrigger(kling_task_id="task-12", poll_interval=0.05, timeout=600))

    assert [event["status"] for event in events] == ["success"]
    first, second = (call["timeout"] for call in hook.calls)
    assert 590 < second < first <= 600


@pytest.mark.parametrize("error", [RuntimeError("surprise"), RecursionError("deep"), TimeoutError("own")])
async def test_a_non_kling_error_of_the_hook_ends_in_one_api_error_event(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def broken(task_id: str, timeout: float | None) -> KlingTask:
        raise error

    use_hook(monkeypatch, FakeHook(broken))

    events = await events_of(KlingTaskTrigger(kling_task_id="task-13", poll_interval=0.01, timeout=30))

    assert [(event["status"], event["reason"]) for event in events] == [("error", "api_error")]
    assert type(error).__name__ in events[0]["message"]


async def test_a_success_without_urls_ends_in_a_no_result_error(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = use_hook(monkeypatch, FakeHook(lambda task_id, timeout: task(task_id, "Success", urls=[])))

    events = await events_of(KlingTaskTrigger(kling_task_id="task-14", poll_interval=0.01, timeout=30))

    assert len(hook.calls) == 1
    [event] = events
    assert (event["status"], event["reason"], event["last_status"]) == ("error", "no_result", "Success")
    assert "Kling task task-14 succeeded without result URLs" in event["message"]
    with pytest.raises(KlingTaskNotReadyError, match="task-14 succeeded without result URLs"):
        finished_task_from_event(event)


async def test_a_success_without_urls_over_http_ends_in_a_no_result_error(api: respx.MockRouter) -> None:
    api.get(STATUS_URL).mock(return_value=status("task-15", "Success", urls=[]))

    events = await events_of(KlingTaskTrigger(kling_task_id="task-15", poll_interval=0.01, timeout=30))

    assert [(event["status"], event["reason"]) for event in events] == [("error", "no_result")]


@pytest.mark.parametrize("urls", [[], None], ids=["empty", "missing"])
def test_a_success_event_without_urls_raises_not_ready(urls: list[str] | None) -> None:
    event = {"status": "success", "kling_task_id": "t", "urls": urls, "usage_seconds": 5}

    with pytest.raises(KlingTaskNotReadyError, match="Kling task t succeeded without result URLs"):
        finished_task_from_event(event)


# -- polls of triggers created together are spread (issue 11) ----------------------------------------------


def test_the_first_poll_comes_at_a_random_point_of_the_first_interval() -> None:
    delays = [first_poll_delay(10.0) for _ in range(2000)]
    assert all(0.0 <= delay <= 10.0 for delay in delays)
    assert min(delays) < 1.0
    assert max(delays) > 9.0


@pytest.mark.parametrize(("interval", "shift"), [(0.2, 0.02), (1.0, 0.1), (10.0, 0.5), (3600.0, 0.5)])
def test_later_polls_shift_by_at_most_a_tenth_of_the_interval_or_half_a_second(
    interval: float, shift: float
) -> None:
    delays = [next_poll_delay(interval) for _ in range(2000)]
    assert all(interval - shift <= delay <= interval + shift for delay in delays)
    assert len(set(delays)) > 1000  # random, not one fixed offset
    assert MAX_POLL_JITTER_SECONDS == 0.5


async def test_triggers_created_together_do_not_poll_in_lockstep(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    first_queries: dict[str, float] = {}

    def answer(task_id: str, timeout: float | None) -> KlingTask:
        first_queries.setdefault(task_id, loop.time() - started)
        return task(task_id, "Success", urls=[SUCCESS_URL])

    use_hook(monkeypatch, FakeHook(answer))
    triggers = [
        KlingTaskTrigger(kling_task_id=f"task-{n}", poll_interval=0.5, timeout=30) for n in range(200)
    ]

    results = await asyncio.gather(*(events_of(trigger) for trigger in triggers))

    assert [events[0]["status"] for events in results] == ["success"] * 200
    buckets = Counter(min(int(seconds / 0.1), 4) for seconds in first_queries.values())
    # Uniform over the first 0.5 s: about 40 per tenth of a second; in lockstep all 200 would share one.
    assert len(buckets) == 5
    assert max(buckets.values()) < 100


@pytest.mark.parametrize(
    ("now", "delay", "expected"),
    [(100.0, 0.0, 100.0), (100.0, 0.01, 100.1), (100.03, 2.0, 102.1), (100.05, 0.05, 100.1)],
)
def test_a_poll_starts_on_the_next_tick(now: float, delay: float, expected: float) -> None:
    assert POLL_TICK_SECONDS == 0.1
    assert poll_start(now, delay, ends=1e9) == pytest.approx(expected)


def test_polls_due_within_one_tick_start_at_the_same_loop_time() -> None:
    """The same float for every poll of a tick: the loop runs their timers in one turn."""
    starts = {poll_start(500.0, delay / 1000, ends=1e9) for delay in range(1, 100)}
    assert starts == {poll_start(500.0, 0.05, ends=1e9)}


def test_a_poll_is_never_moved_past_the_deadline() -> None:
    assert poll_start(100.0, 0.01, ends=100.02) == 100.02
    assert poll_start(100.0, 5.0, ends=100.5) == 100.5


@pytest.mark.parametrize(("interval", "tick"), [(30.0, 0.1), (1.0, 0.1), (0.5, 0.05), (0.02, 0.002)])
def test_a_short_poll_interval_gets_a_finer_grid(interval: float, tick: float) -> None:
    assert poll_tick(interval) == pytest.approx(tick)
