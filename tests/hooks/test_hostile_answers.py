"""
The API as a hostile server (issue 9): whatever it answers, the hook ends in the package's error tree,
within the caller's deadline, and a submit is uncertain (never resent) unless the answer proved that no
task was created.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import respx
from hostile import Exchange, HostileServer, response_head
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_kling.constants import DEFAULT_MAX_IN_FLIGHT
from airflow_provider_kling.exceptions import (
    KlingAuthError,
    KlingBadRequestError,
    KlingError,
    KlingRateLimitError,
    KlingServerError,
    KlingSubmitUncertainError,
    KlingTaskCreationError,
    KlingTransportError,
)
from airflow_provider_kling.hooks._errors import MAX_ANSWER_BYTES
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.models import KlingVideoRequest, TaskStatus

from ._support import CONN_ID, Sleeps, make_hook, set_connection, status_body

if TYPE_CHECKING:
    from hostile import Reply

REQUEST = KlingVideoRequest.build(
    prompt="A lighthouse at dawn", aspect_ratio="16:9", external_task_id="ext-1"
)
#: Generous bound for "ended on time" (noisy, shared machines): the faults below would take 10 s and more.
ON_TIME = 4.0


def hostile_hook(monkeypatch: pytest.MonkeyPatch, server: HostileServer, **extra: Any) -> KlingHook:
    set_connection(monkeypatch, "kling_hostile", host=server.url(""), extra=extra or None)
    return make_hook(Sleeps(), "kling_hostile")


def reply(status: int, body: bytes, **headers: str) -> Reply:
    def answer(exchange: Exchange) -> None:
        exchange.send(response_head(status, {"Content-Length": str(len(body)), **headers}) + body)

    return answer


def trickle(body: bytes, every: float = 0.2) -> Reply:
    def answer(exchange: Exchange) -> None:
        exchange.send(
            response_head(200, {"Content-Length": str(len(body)), "Content-Type": "application/json"})
        )
        exchange.trickle(body, every=every)

    return answer


# -- defect 1: an error inside a 2xx submit answer is uncertain -----------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param({"code": 500, "message": "internal error"}, id="code-500-in-200"),
        pytest.param({"error": {"message": "upstream timeout"}}, id="error-object-in-200"),
        pytest.param({"error": "boom"}, id="error-text-in-200"),
        pytest.param({"output": {}}, id="no-task-id"),
        pytest.param({"output": {"task_id": "../../escape"}}, id="hostile-task-id"),
        pytest.param({"output": {"task_id": ["a"]}}, id="task-id-a-list"),
        pytest.param([1, 2, 3], id="a-list"),
        pytest.param("ok", id="a-string"),
    ],
)
def test_an_error_or_no_task_id_in_a_2xx_submit_is_uncertain(
    hook: KlingHook, api: respx.MockRouter, answer: object
) -> None:
    route = api.post("/v1/tasks/submit").mock(return_value=httpx.Response(200, json=answer))
    with pytest.raises(KlingSubmitUncertainError, match="ext-1"):
        hook.submit_task(REQUEST)
    assert route.call_count == 1  # never resent


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 5000, id="deeply-nested"),
        pytest.param(b"<html>502</html>", id="html"),
        pytest.param(b"\xff\xfe\x00garbage", id="not-utf8"),
        pytest.param(b'{"output": {"task_id": 1e999999}}', id="huge-number"),
        pytest.param(b"", id="empty"),
    ],
)
def test_an_unreadable_2xx_submit_body_is_uncertain(
    hook: KlingHook, api: respx.MockRouter, body: bytes
) -> None:
    route = api.post("/v1/tasks/submit").mock(return_value=httpx.Response(200, content=body))
    with pytest.raises(KlingSubmitUncertainError):
        hook.submit_task(REQUEST)
    assert route.call_count == 1


@pytest.mark.parametrize(
    ("response", "error"),
    [
        pytest.param(
            httpx.Response(200, json={"code": "006001099", "message": "no"}),
            KlingTaskCreationError,
            id="006001099-in-200",
        ),
        pytest.param(
            httpx.Response(400, json={"error": {"message": "R2 prompt too long"}}),
            KlingBadRequestError,
            id="400",
        ),
        pytest.param(httpx.Response(422, json={"error": {"message": "bad"}}), KlingBadRequestError, id="422"),
        pytest.param(httpx.Response(401, json={"error": {"message": "bad key"}}), KlingAuthError, id="401"),
        pytest.param(httpx.Response(403, json={"error": {"message": "forbidden"}}), KlingAuthError, id="403"),
    ],
)
def test_documented_refusals_prove_nothing_was_created(
    hook: KlingHook, api: respx.MockRouter, response: httpx.Response, error: type[KlingError]
) -> None:
    route = api.post("/v1/tasks/submit").mock(return_value=response)
    with pytest.raises(error):
        hook.submit_task(REQUEST)
    assert route.call_count == 1


def test_resources_insufficient_inside_a_200_is_retried(hook: KlingHook, api: respx.MockRouter) -> None:
    route = api.post("/v1/tasks/submit").mock(
        side_effect=[
            httpx.Response(200, json={"code": "006001094", "message": "busy"}),
            httpx.Response(200, json={"output": {"task_id": "task-1"}}),
        ]
    )
    assert hook.submit_task(REQUEST) == "task-1"
    assert route.call_count == 2


def test_a_huge_content_length_on_submit_is_uncertain(monkeypatch: pytest.MonkeyPatch) -> None:
    garbled = reply(200, b"{}", **{"Content-Length": "9" * 5000})
    with HostileServer([garbled]) as server, hostile_hook(monkeypatch, server) as hook:
        with pytest.raises(KlingSubmitUncertainError):
            hook.submit_task(REQUEST)
        assert len(server.requests) == 1


# -- defect 2: every request and every call is bounded in time ------------------------------------------


def test_a_trickling_status_answer_ends_at_the_request_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    body = json.dumps(status_body(status="Running")).encode()
    with (
        HostileServer([trickle(body)]) as server,
        hostile_hook(monkeypatch, server, timeout=1, max_retries=0) as hook,
    ):
        started = time.monotonic()
        with pytest.raises(KlingTransportError, match="no complete answer"):
            hook.get_task("task-1")
        assert time.monotonic() - started < ON_TIME


def test_a_trickling_status_answer_ends_at_the_callers_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    body = json.dumps(status_body(status="Running")).encode()
    with HostileServer([trickle(body)]) as server, hostile_hook(monkeypatch, server) as hook:
        hook.sleep = time.sleep
        started = time.monotonic()
        with pytest.raises(KlingTransportError):
            hook.get_task("task-1", timeout=1)
        assert time.monotonic() - started < ON_TIME


async def test_a_trickling_status_answer_ends_at_the_async_callers_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = json.dumps(status_body(status="Running")).encode()
    with HostileServer([trickle(body)]) as server:
        set_connection(monkeypatch, "kling_hostile", host=server.url(""))
        hook = KlingHook("kling_hostile")
        started = time.monotonic()
        with pytest.raises(KlingTransportError):
            await hook.aget_task("task-1", timeout=1)
        assert time.monotonic() - started < ON_TIME


def test_a_trickling_submit_answer_is_uncertain_on_time(monkeypatch: pytest.MonkeyPatch) -> None:
    body = json.dumps({"output": {"task_id": "task-1"}}).encode()
    with HostileServer([trickle(body)]) as server, hostile_hook(monkeypatch, server, timeout=1) as hook:
        started = time.monotonic()
        with pytest.raises(KlingSubmitUncertainError):
            hook.submit_task(REQUEST)
        assert time.monotonic() - started < ON_TIME
        assert len(server.requests) == 1


def test_retry_after_never_outlives_the_callers_timeout(
    hook: KlingHook, api: respx.MockRouter, sleeps: Sleeps
) -> None:
    api.get("/v1/tasks/status").mock(
        return_value=httpx.Response(
            429, json={"error": {"message": "slow down"}}, headers={"Retry-After": "60"}
        )
    )
    with pytest.raises(KlingRateLimitError):
        hook.get_task("task-1", timeout=10)
    assert sleeps.calls == []  # a 60 s wait cannot fit in 10 s: the error is raised instead


async def test_async_retry_after_never_outlives_the_callers_timeout(
    hook: KlingHook, api: respx.MockRouter, sleeps: Sleeps
) -> None:
    api.get("/v1/tasks/status").mock(
        return_value=httpx.Response(503, json={"error": {"message": "later"}}, headers={"Retry-After": "60"})
    )
    with pytest.raises(KlingServerError):
        await hook.aget_task("task-1", timeout=10)
    assert sleeps.calls == []


async def test_a_stalled_request_slot_counts_against_the_callers_timeout(
    hook: KlingHook, api: respx.MockRouter
) -> None:
    from airflow_provider_kling.hooks import _clients

    api.get("/v1/tasks/status").mock(return_value=httpx.Response(200, json=status_body()))
    _, slots = await _clients.shared_async_pool(CONN_ID, DEFAULT_MAX_IN_FLIGHT)
    taken = [await slots.acquire() for _ in range(DEFAULT_MAX_IN_FLIGHT)]
    try:
        started = time.monotonic()
        with pytest.raises(KlingTransportError):
            await hook.aget_task("task-1", timeout=0.5, max_retries=0)
        assert time.monotonic() - started < ON_TIME
    finally:
        for _ in taken:
            slots.release()
    assert (await hook.aget_task("task-1")).status is TaskStatus.RUNNING


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), "10", True])
def test_a_call_timeout_must_be_a_finite_number(hook: KlingHook, timeout: object) -> None:
    with pytest.raises(ValueError, match="timeout"):
        hook.get_task("task-1", timeout=timeout)  # type: ignore[arg-type]


# -- defect 5: raw errors never escape ------------------------------------------------------------------


def test_a_deeply_nested_status_body_is_a_server_error(hook: KlingHook, api: respx.MockRouter) -> None:
    api.get("/v1/tasks/status").mock(return_value=httpx.Response(200, content=b"[" * 5000))
    with pytest.raises(KlingServerError, match="not JSON"):
        hook.get_task("task-1", max_retries=0)


def test_a_deeply_nested_error_message_still_reads_the_task(hook: KlingHook, api: respx.MockRouter) -> None:
    nested: Any = "deep"
    for _ in range(400):
        nested = [nested]
    body = status_body(status="Failure", error_message=nested)
    api.get("/v1/tasks/status").mock(return_value=httpx.Response(200, json=body))
    task = hook.get_task("task-1")
    assert task.status is TaskStatus.FAILURE


def test_a_huge_content_length_on_status_is_a_transport_error(monkeypatch: pytest.MonkeyPatch) -> None:
    garbled = reply(200, b"{}", **{"Content-Length": "9" * 5000})
    with (
        HostileServer([garbled]) as server,
        hostile_hook(monkeypatch, server, max_retries=0) as hook,
        pytest.raises(KlingTransportError, match=r"garbled|RemoteProtocolError"),
    ):
        hook.get_task("task-1")


def test_an_answer_larger_than_the_cap_is_refused(hook: KlingHook, api: respx.MockRouter) -> None:
    api.get("/v1/tasks/status").mock(return_value=httpx.Response(200, content=b" " * (MAX_ANSWER_BYTES + 1)))
    with pytest.raises(KlingServerError, match="more than"):
        hook.get_task("task-1", max_retries=0)


def test_an_endless_status_answer_is_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    def endless(exchange: Exchange) -> None:
        exchange.endless(
            response_head(200, {"Transfer-Encoding": "chunked"}), chunk=b"10000\r\n" + b" " * 65536 + b"\r\n"
        )

    with (
        HostileServer([endless]) as server,
        hostile_hook(monkeypatch, server, max_retries=0) as hook,
        pytest.raises(KlingServerError, match="more than"),
    ):
        hook.get_task("task-1")


# -- defect 6: the status answer must be about the task asked for ---------------------------------------


def test_a_status_answer_about_another_task_is_refused(hook: KlingHook, api: respx.MockRouter) -> None:
    api.get("/v1/tasks/status").mock(return_value=httpx.Response(200, json=status_body("task-2", "Success")))
    with pytest.raises(KlingServerError, match=r"another task \(task-2\)"):
        hook.get_task("task-1", max_retries=0)


@pytest.mark.parametrize("task_id", ["", "../x", "a\nb", "vidéo", "x" * 129])
def test_a_hostile_task_id_argument_makes_no_request(
    hook: KlingHook, api: respx.MockRouter, task_id: str
) -> None:
    route = api.get("/v1/tasks/status").mock(return_value=httpx.Response(200, json=status_body()))
    with pytest.raises(ValueError, match="task_id"):
        hook.get_task(task_id)
    assert route.call_count == 0


# -- defect 10: a Success without a result is reported where it is first seen ---------------------------


def test_wait_for_task_reports_a_success_without_urls(hook: KlingHook, api: respx.MockRouter) -> None:
    from airflow_provider_kling.exceptions import KlingTaskNotReadyError

    api.get("/v1/tasks/status").mock(
        return_value=httpx.Response(200, json=status_body(status="Success", urls=[]))
    )
    with pytest.raises(KlingTaskNotReadyError, match="task-1 succeeded without result URLs"):
        hook.wait_for_task("task-1", poll_interval=1, timeout=10)


# -- fuzzing: random answers end in the error tree -------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
FIELD_VALUES = JSON | st.just("task-1") | st.just("Success") | st.just(["https://cdn.test/1.mp4"])


def status_answers() -> st.SearchStrategy[Any]:
    output = st.fixed_dictionaries(
        {},
        optional={
            "task_id": FIELD_VALUES,
            "task_status": FIELD_VALUES,
            "urls": FIELD_VALUES,
            "error_message": FIELD_VALUES,
            "submit_time": FIELD_VALUES,
            "finish_time": FIELD_VALUES,
        },
    )
    body = st.fixed_dictionaries(
        {}, optional={"output": output | JSON, "usage": JSON, "request_id": JSON, "code": JSON, "error": JSON}
    )
    return body | JSON


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=status_answers(), status=st.sampled_from([200, 200, 201, 400, 404, 429, 500, 502]))
def test_fuzzed_status_answers_end_in_the_error_tree(hook: KlingHook, answer: Any, status: int) -> None:
    with respx.mock(base_url="https://kling.test") as api:
        api.get("/v1/tasks/status").mock(return_value=httpx.Response(status, json=answer))
        try:
            task = hook.get_task("task-1", max_retries=0)
        except KlingError:
            return
    assert task.task_id == "task-1"
    assert status < 300


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=status_answers(), status=st.sampled_from([200, 200, 201, 400, 401, 404, 429, 500, 502]))
def test_fuzzed_submit_answers_are_a_task_id_or_a_known_outcome(
    hook: KlingHook, answer: Any, status: int
) -> None:
    with respx.mock(base_url="https://kling.test") as api:
        route = api.post("/v1/tasks/submit").mock(return_value=httpx.Response(status, json=answer))
        try:
            task_id = hook.submit_task(REQUEST, max_retries=0)
        except (
            KlingSubmitUncertainError,
            KlingRateLimitError,
            KlingTaskCreationError,
            KlingBadRequestError,
            KlingAuthError,
        ):
            assert route.call_count == 1
            return
    assert status < 300
    assert task_id


def test_a_well_formed_success_is_always_read(hook: KlingHook, api: respx.MockRouter) -> None:
    body = status_body(
        status="Success", request_id=7, submit_time=1.5, finish_time="x", error_message={"a": 1}
    )
    body["usage"] = {"duration": 5.5}
    api.get("/v1/tasks/status").mock(return_value=httpx.Response(200, json=body))
    task = hook.get_task("task-1")
    assert task.status is TaskStatus.SUCCESS
    assert task.urls == ["https://cdn.test/results/task-1/1.mp4"]
    assert task.usage_seconds == 5.5


def test_asyncio_timeout_error_is_not_confused_with_ours() -> None:
    assert not issubclass(asyncio.TimeoutError, KlingError)
    assert CONN_ID
