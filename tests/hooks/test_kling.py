"""KlingHook against a respx-mocked API: exact wire checks, the retry policy, errors, connection handling."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from unittest import mock

import aiohttp
import httpx
import pytest
import respx
from pydantic import ValidationError

from airflow_provider_kling.constants import DEFAULT_MAX_IN_FLIGHT
from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingAuthError,
    KlingBadRequestError,
    KlingConnectionConfigError,
    KlingNotFoundError,
    KlingRateLimitError,
    KlingServerError,
    KlingSubmitUncertainError,
    KlingTaskCreationError,
    KlingTaskTimeoutError,
    KlingTransportError,
)
from airflow_provider_kling.get_provider_info import get_provider_info
from airflow_provider_kling.hooks import _clients
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.models import KlingVideoRequest, TaskStatus

from ._support import (
    API_KEY,
    BASE_URL,
    CONN_ID,
    Clock,
    HttpxSender,
    LogCapture,
    Sleeps,
    make_hook,
    set_connection,
    status_body,
)

SUBMIT_URL = f"{BASE_URL}/v1/tasks/submit"
STATUS_URL = f"{BASE_URL}/v1/tasks/status"
BODY: dict[str, Any] = {
    "model": "kling-v3-omni",
    "input": {"prompt": "A red fox runs through fresh snow at dawn"},
    "parameters": {"mode": "std", "aspect_ratio": "16:9", "duration": 5, "external_task_id": "ext-1"},
}
REQUEST = KlingVideoRequest.model_validate(BODY)


def submit_ok(task_id: str = "task-1") -> httpx.Response:
    return httpx.Response(200, json={"output": {"task_id": task_id}, "request_id": "req-submit"})


def json_error(
    status: int, code: str | None = None, message: str = "failed", **headers: str
) -> httpx.Response:
    return httpx.Response(
        status,
        json={
            "error": {"message": message, "type": "error", "param": None, "code": code},
            "request_id": "rq",
        },
        headers=headers,
    )


HTML_502 = httpx.Response(
    502, text="<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
)


# -- the hook as Airflow sees it ------------------------------------------------------------------------


def test_hook_metadata_matches_manifest() -> None:
    (conn_type,) = get_provider_info()["connection-types"]
    assert KlingHook.conn_name_attr == "kling_conn_id"
    assert KlingHook.default_conn_name == "kling_default"
    assert KlingHook.conn_type == conn_type["connection-type"] == "kling"
    assert KlingHook.hook_name == conn_type["hook-name"] == "Kling (ModelVerse)"
    # The form is declared in the manifest only: a hook method would be Airflow 3.2's deprecated path.
    assert "get_ui_field_behaviour" not in vars(KlingHook)
    assert conn_type["ui-field-behaviour"]["relabeling"] == {"host": "Base URL", "password": "API key"}


def test_default_conn_id() -> None:
    assert KlingHook().kling_conn_id == "kling_default"


def test_get_conn_is_one_cached_sync_client(hook: KlingHook) -> None:
    client = hook.get_conn()
    assert isinstance(client, httpx.Client)
    assert hook.get_conn() is client
    hook.close()
    assert client.is_closed
    assert hook.get_conn() is not client


def test_context_manager_closes_client(connection: None) -> None:
    with KlingHook(CONN_ID) as kling_hook:
        client = kling_hook.get_conn()
    assert client.is_closed


def test_connection_fetched_once(
    hook: KlingHook, api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    original = KlingHook.get_connection

    def counting(conn_id: str) -> Any:
        calls.append(conn_id)
        return original(conn_id)

    monkeypatch.setattr(KlingHook, "get_connection", staticmethod(counting))
    api.get("/v1/tasks/status").mock(return_value=httpx.Response(200, json=status_body()))
    for _ in range(3):
        hook.get_task("task-1")
    assert calls == [CONN_ID]


@pytest.mark.parametrize(
    ("kwargs", "name"), [({"timeout": 0}, "timeout"), ({"max_retries": 99}, "max_retries")]
)
def test_hook_arguments_checked_at_construction(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=f"{name} must be"):
        KlingHook(CONN_ID, **kwargs)


def test_hook_arguments_override_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, extra={"timeout": 5, "max_retries": 4})
    hook = KlingHook(CONN_ID, timeout=2.5, max_retries=1)
    assert (hook.settings.timeout, hook.settings.max_retries) == (2.5, 1)
    assert KlingHook(CONN_ID).settings.timeout == 5.0


# -- exact wire checks ----------------------------------------------------------------------------------


def assert_authenticated(request: httpx.Request) -> None:
    assert request.headers["Authorization"] == API_KEY
    assert not request.headers["Authorization"].lower().startswith("bearer")
    assert request.headers["User-Agent"].startswith("airflow-provider-kling/")
    assert request.headers["Accept"] == "application/json"


def test_submit_wire(hook: KlingHook, api: respx.MockRouter) -> None:
    route = api.post("/v1/tasks/submit").mock(return_value=submit_ok("task-42"))
    assert hook.submit_task(REQUEST) == "task-42"
    assert route.call_count == 1
    request = route.calls.last.request
    assert request.method == "POST"
    assert str(request.url) == SUBMIT_URL
    assert_authenticated(request)
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == REQUEST.to_api_body()


def test_submit_accepts_a_mapping(hook: KlingHook, api: respx.MockRouter) -> None:
    route = api.post("/v1/tasks/submit").mock(return_value=submit_ok())
    hook.submit_task(BODY)
    assert (
        json.loads(route.calls.last.request.content) == KlingVideoRequest.model_validate(BODY).to_api_body()
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({**BODY, "unknown_field": 1}, id="unknown-field"),
        pytest.param({**BODY, "parameters": {**BODY["parameters"], "mode": "ultra"}}, id="R13-mode"),
        pytest.param({**BODY, "parameters": {**BODY["parameters"], "sound": "loud"}}, id="R6-sound"),
        pytest.param({**BODY, "model": "kling-v2"}, id="model-name"),
    ],
)
def test_invalid_mapping_makes_no_http_call(
    hook: KlingHook, api: respx.MockRouter, body: dict[str, Any]
) -> None:
    route = api.post("/v1/tasks/submit").mock(return_value=submit_ok())
    with pytest.raises(ValidationError):
        hook.submit_task(body)
    assert route.call_count == 0


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({"image_list": [{"image_url": "s3://bucket/first.png", "type": "first_frame"}]}, "image_list[0]"),
        (
            {"image_list": [{"image_url": "https://x/a.png"}, {"image_url": "S3://bucket/b.png"}]},
            "image_list[1]",
        ),
        ({"video_list": [{"video_url": "s3://bucket/clip.mp4", "refer_type": "feature"}]}, "video_list[0]"),
    ],
)
def test_submit_refuses_s3_inputs(
    hook: KlingHook, api: respx.MockRouter, parameters: dict[str, Any], field: str
) -> None:
    route = api.post("/v1/tasks/submit").mock(return_value=submit_ok())
    body = {**BODY, "parameters": {**BODY["parameters"], **parameters}}
    with pytest.raises(ValueError, match=r"s3://") as info:
        hook.submit_task(body)
    assert field in str(info.value)
    assert route.call_count == 0


def test_submit_logs_the_task_id(hook: KlingHook, api: respx.MockRouter, logs: LogCapture) -> None:
    api.post("/v1/tasks/submit").mock(return_value=submit_ok("task-77"))
    hook.submit_task(REQUEST)
    assert "Submitted Kling task task-77" in logs.text()


def test_status_wire(hook: KlingHook, api: respx.MockRouter) -> None:
    body = status_body(status="Success", urls=["https://cdn.test/a.mp4"], finish_time=1756959050)
    route = api.get("/v1/tasks/status").mock(return_value=httpx.Response(200, json=body))
    task = hook.get_task("task-1")
    request = route.calls.last.request
    assert request.method == "GET"
    assert request.url.path == "/v1/tasks/status"
    assert dict(request.url.params) == {"task_id": "task-1"}
    assert request.content == b""
    assert_authenticated(request)
    assert (task.task_id, task.status, task.urls, task.usage_seconds) == (
        "task-1",
        TaskStatus.SUCCESS,
        ["https://cdn.test/a.mp4"],
        5,
    )


def test_status_with_a_path_prefix(monkeypatch: pytest.MonkeyPatch, sleeps: Sleeps) -> None:
    set_connection(monkeypatch, host="proxy.test/modelverse/")
    with respx.mock(assert_all_mocked=True) as router:
        route = router.get("https://proxy.test/modelverse/v1/tasks/status").mock(
            return_value=httpx.Response(200, json=status_body())
        )
        make_hook(sleeps).get_task("task-1")
    assert route.call_count == 1


@pytest.mark.parametrize("task_id", ["", "   "])
def test_get_task_needs_a_task_id(hook: KlingHook, task_id: str) -> None:
    with pytest.raises(ValueError, match="task_id"):
        hook.get_task(task_id)


# -- the retry policy, status queries -------------------------------------------------------------------


def test_429_retry_after_honoured(hook: KlingHook, api: respx.MockRouter, sleeps: Sleeps) -> None:
    route = api.get("/v1/tasks/status").mock(
        side_effect=[json_error(429, **{"Retry-After": "7"}), httpx.Response(200, json=status_body())]
    )
    assert hook.get_task("task-1").status is TaskStatus.RUNNING
    assert route.call_count == 2
    assert sleeps.calls == [7.0]


def test_retry_after_is_capped(hook: KlingHook, api: respx.MockRouter, sleeps: Sleeps) -> None:
    api.get("/v1/tasks/status").mock(
        side_effect=[json_error(429, **{"Retry-After": "86400"}), httpx.Response(200, json=status_body())]
    )
    hook.get_task("task-1")
    assert sleeps.calls == [60.0]


def test_503_then_success(hook: KlingHook, api: respx.MockRouter, sleeps: Sleeps) -> None:
    route = api.get("/v1/tasks/status").mock(
        side_effect=[json_error(503), json_error(503), httpx.Response(200, json=status_body())]
    )
    hook.get_task("task-1")
    assert route.call_count == 3
    assert sleeps.calls == [0.25, 0.5]  # full jitter at its midpoint: 0.5 * [0.5, 1.0]


def test_html_502_exhausts_retries(hook: KlingHook, api: respx.MockRouter, sleeps: Sleeps) -> None:
    route = api.get("/v1/tasks/status").mock(return_value=HTML_502)
    with pytest.raises(KlingServerError) as info:
        hook.get_task("task-1", max_retries=3)
    assert route.call_count == 4
    assert sleeps.calls == [0.25, 0.5, 1.0]
    assert info.value.status_code == 502
    assert info.value.vendor_code is None
    assert "<title>502 Bad Gateway</title>" in info.value.body_excerpt


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(
            httpx.Response(200, text='{"output": {"task_id": "task-1", "task_st'), id="truncated-json"
        ),
        pytest.param(httpx.Response(200, text="<html>ok</html>"), id="html-200"),
        pytest.param(httpx.Response(200, json={"output": {}}), id="no-task"),
        pytest.param(httpx.Response(200, json=[1, 2, 3]), id="not-an-object"),
        pytest.param(
            httpx.Response(200, json={"code": "006001095", "message": "upstream"}), id="vendor-006001095"
        ),
    ],
)
def test_malformed_status_response_is_retried(
    hook: KlingHook, api: respx.MockRouter, sleeps: Sleeps, bad: httpx.Response
) -> None:
    route = api.get("/v1/tasks/status").mock(side_effect=[bad, httpx.Response(200, json=status_body())])
    assert hook.get_task("task-1").task_id == "task-1"
    assert route.call_count == 2


def test_malformed_status_response_error(hook: KlingHook, api: respx.MockRouter) -> None:
    api.get("/v1/tasks/status").mock(return_value=httpx.Response(200, text="not json"))
    with pytest.raises(KlingServerError, match="not JSON") as info:
        hook.get_task("task-1", max_retries=0)
    assert info.value.status_code == 200
    assert info.value.body_excerpt == "not json"


@pytest.mark.parametrize(
    ("response", "error"),
    [
        pytest.param(json_error(400, message="bad task id"), KlingBadRequestError, id="400"),
        pytest.param(json_error(401, "invalid_api_key"), KlingAuthError, id="401"),
        pytest.param(json_error(403), KlingAuthError, id="403"),
        pytest.param(json_error(404, "task_not_found"), KlingNotFoundError, id="404"),
        pytest.param(json_error(422), KlingBadRequestError, id="422"),
        pytest.param(json_error(418), KlingAPIError, id="418"),
    ],
)
def test_status_errors_never_retried(
    hook: KlingHook, api: respx.MockRouter, sleeps: Sleeps, response: httpx.Response, error: type[Exception]
) -> None:
    route = api.get("/v1/tasks/status").mock(return_value=response)
    with pytest.raises(error):
        hook.get_task("task-1")
    assert route.call_count == 1
    assert sleeps.calls == []


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(httpx.ConnectError("refused"), id="connect"),
        pytest.param(httpx.ReadTimeout("timed out"), id="read-timeout"),
        pytest.param(
            httpx.RemoteProtocolError("Server disconnected without sending a response."), id="disconnect"
        ),
    ],
)
def test_status_transport_errors_retried(hook: KlingHook, api: respx.MockRouter, failure: Exception) -> None:
    route = api.get("/v1/tasks/status").mock(side_effect=[failure, httpx.Response(200, json=status_body())])
    hook.get_task("task-1")
    assert route.call_count == 2


def test_status_transport_error_after_budget(hook: KlingHook, api: respx.MockRouter) -> None:
    api.get("/v1/tasks/status").mock(side_effect=httpx.ReadTimeout("timed out"))
    with pytest.raises(KlingTransportError, match="ReadTimeout") as info:
        hook.get_task("task-1", max_retries=1)
    assert info.value.sent is True
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


def test_retries_logged_at_warning(hook: KlingHook, api: respx.MockRouter, logs: LogCapture) -> None:
    api.get("/v1/tasks/status").mock(side_effect=[json_error(503), httpx.Response(200, json=status_body())])
    hook.get_task("task-1")
    warnings = [entry for entry in logs.structlog_entries if entry["log_level"] == "warning"]
    assert len(warnings) == 1
    assert "retry 1 of 5 in 0.25 s" in warnings[0]["event"]
    assert "status query of task task-1" in warnings[0]["event"]


# -- max_retries: per connection and per call -----------------------------------------------------------


def test_max_retries_from_connection(
    monkeypatch: pytest.MonkeyPatch, api: respx.MockRouter, sleeps: Sleeps
) -> None:
    set_connection(monkeypatch, extra={"max_retries": 2})
    route = api.get("/v1/tasks/status").mock(return_value=json_error(503))
    with pytest.raises(KlingServerError):
        make_hook(sleeps).get_task("task-1")
    assert route.call_count == 3


def test_default_max_retries_is_five(hook: KlingHook, api: respx.MockRouter, sleeps: Sleeps) -> None:
    route = api.get("/v1/tasks/status").mock(return_value=json_error(500))
    with pytest.raises(KlingServerError):
        hook.get_task("task-1")
    assert route.call_count == 6
    assert sleeps.calls == [0.25, 0.5, 1.0, 2.0, 4.0]


@pytest.mark.parametrize("per_call", [0, 1, 4])
def test_max_retries_per_call(
    monkeypatch: pytest.MonkeyPatch, api: respx.MockRouter, sleeps: Sleeps, per_call: int
) -> None:
    set_connection(monkeypatch, extra={"max_retries": 2})
    route = api.get("/v1/tasks/status").mock(return_value=json_error(503))
    with pytest.raises(KlingServerError):
        make_hook(sleeps).get_task("task-1", max_retries=per_call)
    assert route.call_count == per_call + 1


def test_max_retries_per_call_on_submit(hook: KlingHook, api: respx.MockRouter) -> None:
    route = api.post("/v1/tasks/submit").mock(return_value=json_error(429))
    with pytest.raises(KlingRateLimitError):
        hook.submit_task(REQUEST, max_retries=2)
    assert route.call_count == 3


@pytest.mark.parametrize("bad", [-1, 21, True])
def test_bad_max_retries_per_call(hook: KlingHook, api: respx.MockRouter, bad: int) -> None:
    route = api.get("/v1/tasks/status").mock(return_value=httpx.Response(200, json=status_body()))
    with pytest.raises(ValueError, match="max_retries"):
        hook.get_task("task-1", max_retries=bad)
    assert route.call_count == 0


# -- the retry policy, submits: never pay twice ---------------------------------------------------------


def test_submit_retried_on_429(hook: KlingHook, api: respx.MockRouter, sleeps: Sleeps) -> None:
    route = api.post("/v1/tasks/submit").mock(
        side_effect=[json_error(429, **{"Retry-After": "3"}), submit_ok("task-9")]
    )
    assert hook.submit_task(REQUEST) == "task-9"
    assert route.call_count == 2
    assert sleeps.calls == [3.0]


@pytest.mark.parametrize(
    "busy",
    [
        pytest.param(json_error(400, "006001094", "resources insufficient"), id="400-openai-shape"),
        pytest.param(httpx.Response(200, json={"code": "006001094", "message": "busy"}), id="200-flat"),
        pytest.param(httpx.Response(503, json={"code": 6001094, "message": "busy"}), id="503-numeric-code"),
    ],
)
def test_submit_retried_on_006001094(hook: KlingHook, api: respx.MockRouter, busy: httpx.Response) -> None:
    route = api.post("/v1/tasks/submit").mock(side_effect=[busy, submit_ok()])
    assert hook.submit_task(REQUEST) == "task-1"
    assert route.call_count == 2


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("refused"), httpx.ConnectTimeout("connect timeout"), httpx.PoolTimeout("pool")],
)
def test_submit_retried_when_nothing_was_sent(
    hook: KlingHook, api: respx.MockRouter, failure: Exception
) -> None:
    route = api.post("/v1/tasks/submit").mock(side_effect=[failure, submit_ok()])
    assert hook.submit_task(REQUEST) == "task-1"
    assert route.call_count == 2


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(httpx.ReadTimeout("timed out"), id="read-timeout"),
        pytest.param(httpx.WriteTimeout("timed out"), id="write-timeout"),
        pytest.param(
            httpx.RemoteProtocolError("Server disconnected without sending a response."), id="disconnect"
        ),
        pytest.param(httpx.ReadError("Connection reset by peer"), id="reset"),
        pytest.param(json_error(500), id="500"),
        pytest.param(HTML_502, id="html-502"),
        pytest.param(json_error(503), id="503"),
        pytest.param(json_error(504), id="504"),
        pytest.param(json_error(408), id="408"),
        pytest.param(json_error(409), id="409"),
        pytest.param(json_error(500, "006001095"), id="vendor-006001095"),
        pytest.param(
            httpx.Response(200, json={"code": "006001095", "message": "x"}), id="200-vendor-006001095"
        ),
        pytest.param(httpx.Response(200, text='{"output": {"task_'), id="malformed-2xx"),
        pytest.param(httpx.Response(200, json={"output": {}}), id="2xx-without-task-id"),
        pytest.param(httpx.Response(201, json={"request_id": "x"}), id="201-without-output"),
    ],
)
def test_submit_never_retried_after_ambiguous_failure(
    hook: KlingHook, api: respx.MockRouter, sleeps: Sleeps, failure: Any
) -> None:
    route = api.post("/v1/tasks/submit").mock(side_effect=[failure, submit_ok()])
    with pytest.raises(KlingSubmitUncertainError, match="ext-1") as info:
        hook.submit_task(REQUEST)
    assert route.call_count == 1
    assert sleeps.calls == []
    assert info.value.external_task_id == "ext-1"
    assert info.value.__cause__ is not None


def test_uncertain_submit_without_external_task_id(hook: KlingHook, api: respx.MockRouter) -> None:
    api.post("/v1/tasks/submit").mock(return_value=json_error(500))
    body = {**BODY, "parameters": {"aspect_ratio": "16:9"}}
    with pytest.raises(KlingSubmitUncertainError, match="Check the vendor's console") as info:
        hook.submit_task(body)
    assert info.value.external_task_id is None


@pytest.mark.parametrize(
    ("response", "error"),
    [
        pytest.param(
            json_error(400, "006001099", "R1 input.prompt: required"), KlingTaskCreationError, id="006001099"
        ),
        pytest.param(json_error(400), KlingBadRequestError, id="400"),
        pytest.param(json_error(401), KlingAuthError, id="401"),
        pytest.param(json_error(403), KlingAuthError, id="403"),
        pytest.param(json_error(422), KlingBadRequestError, id="422"),
    ],
)
def test_submit_refusals_raised_once(
    hook: KlingHook, api: respx.MockRouter, response: httpx.Response, error: type[Exception]
) -> None:
    route = api.post("/v1/tasks/submit").mock(return_value=response)
    with pytest.raises(error):
        hook.submit_task(REQUEST)
    assert route.call_count == 1


def test_submit_rate_limit_exhausted_is_not_uncertain(hook: KlingHook, api: respx.MockRouter) -> None:
    route = api.post("/v1/tasks/submit").mock(return_value=json_error(429))
    with pytest.raises(KlingRateLimitError):
        hook.submit_task(REQUEST)
    assert route.call_count == 6


# -- vendor codes and error details on the exception ----------------------------------------------------


@pytest.mark.parametrize(
    ("response", "error", "code"),
    [
        pytest.param(
            json_error(400, "006001099", "creation failed"), KlingTaskCreationError, "006001099", id="openai"
        ),
        pytest.param(
            httpx.Response(400, json={"code": "006001099", "message": "creation failed"}),
            KlingTaskCreationError,
            "006001099",
            id="flat",
        ),
        pytest.param(
            httpx.Response(200, json={"code": "006001099", "message": "creation failed"}),
            KlingTaskCreationError,
            "006001099",
            id="in-a-200",
        ),
    ],
)
def test_vendor_code_on_the_exception(
    hook: KlingHook, api: respx.MockRouter, response: httpx.Response, error: type[KlingAPIError], code: str
) -> None:
    api.post("/v1/tasks/submit").mock(return_value=response)
    with pytest.raises(error) as info:
        hook.submit_task(REQUEST)
    assert type(info.value) is error
    assert info.value.vendor_code == code
    assert info.value.status_code == response.status_code
    assert f"code {code}" in str(info.value)


def test_an_unknown_submit_refusal_is_uncertain_and_keeps_its_details(
    hook: KlingHook, api: respx.MockRouter
) -> None:
    # 418 is no documented "nothing was created" answer: a paid task may exist (issue 9, defect 1).
    route = api.post("/v1/tasks/submit").mock(
        return_value=httpx.Response(418, json={"code": "teapot", "message": "short and stout"})
    )
    with pytest.raises(KlingSubmitUncertainError, match="short and stout") as info:
        hook.submit_task(REQUEST)
    cause = info.value.__cause__
    assert isinstance(cause, KlingAPIError)
    assert (cause.vendor_code, cause.status_code) == ("teapot", 418)
    assert route.call_count == 1


def test_request_id_from_header(hook: KlingHook, api: respx.MockRouter) -> None:
    api.get("/v1/tasks/status").mock(
        return_value=httpx.Response(404, text="missing", headers={"X-Request-Id": "hdr-123"})
    )
    with pytest.raises(KlingNotFoundError) as info:
        hook.get_task("task-1")
    assert info.value.request_id == "hdr-123"
    assert info.value.body_excerpt == "missing"


# -- the key never leaks --------------------------------------------------------------------------------


def test_key_absent_from_errors_reprs_and_logs(
    hook: KlingHook, api: respx.MockRouter, logs: LogCapture
) -> None:
    echo = {"error": {"message": f"key {API_KEY} is invalid", "code": API_KEY}, "request_id": API_KEY}
    api.get("/v1/tasks/status").mock(
        side_effect=[
            httpx.Response(503, json=echo, headers={"X-Request-Id": API_KEY}),
            httpx.ReadError(f"peer echoed {API_KEY}"),
            httpx.Response(200, text=f"garbage {API_KEY}"),
            httpx.Response(401, json=echo),
        ]
    )
    api.post("/v1/tasks/submit").mock(
        side_effect=[httpx.Response(429, json=echo), httpx.Response(502, text=f"<html>{API_KEY}</html>")]
    )
    errors: list[BaseException] = []
    for call in (lambda: hook.get_task("task-1"), lambda: hook.submit_task(REQUEST)):
        with pytest.raises(Exception) as info:  # noqa: PT011 - every failure is collected and checked below
            call()
        errors.append(info.value)
    assert isinstance(errors[0], KlingAuthError)
    assert isinstance(errors[1], KlingSubmitUncertainError)
    chain: list[BaseException] = []
    for error in errors:
        while error is not None and not isinstance(error, httpx.HTTPError):
            chain.append(error)
            error = error.__cause__  # type: ignore[assignment]
    assert len(chain) == 3  # the auth error, the uncertain error and its server error
    for error in chain:
        assert API_KEY not in str(error)
        assert API_KEY not in repr(error)
        for value in vars(error).values():
            assert API_KEY not in str(value)
    assert API_KEY not in repr(hook)
    assert API_KEY not in repr(hook.settings)
    text = logs.text()
    assert "retry" in text  # the retries were logged, and logged without the key
    assert "failed ambiguously" in text
    assert API_KEY not in text


# -- connection problems --------------------------------------------------------------------------------


def test_missing_key_fails_before_any_request(
    monkeypatch: pytest.MonkeyPatch, api: respx.MockRouter, sleeps: Sleeps
) -> None:
    set_connection(monkeypatch, password=None)
    route = api.post("/v1/tasks/submit").mock(return_value=submit_ok())
    with pytest.raises(KlingConnectionConfigError, match=f"'{CONN_ID}' has no API key"):
        make_hook(sleeps).submit_task(REQUEST)
    assert route.call_count == 0


def test_bad_extra_named(monkeypatch: pytest.MonkeyPatch, sleeps: Sleeps) -> None:
    set_connection(monkeypatch, extra={"timeout": "fast"})
    with pytest.raises(KlingConnectionConfigError, match="extra 'timeout'"):
        make_hook(sleeps).get_task("task-1")


def test_port_field_used(monkeypatch: pytest.MonkeyPatch, sleeps: Sleeps) -> None:
    set_connection(monkeypatch, host="127.0.0.1", port=8089)
    assert make_hook(sleeps).settings.base_url == "https://127.0.0.1:8089"


# -- wait_for_task --------------------------------------------------------------------------------------


@pytest.fixture
def clock(hook: KlingHook) -> Clock:
    fake = Clock()
    hook.monotonic = fake.monotonic
    hook.sleep = fake.sleep
    return fake


def statuses(*names: str) -> list[httpx.Response]:
    return [httpx.Response(200, json=status_body(status=name)) for name in names]


def test_wait_until_success(hook: KlingHook, api: respx.MockRouter, clock: Clock) -> None:
    route = api.get("/v1/tasks/status").mock(side_effect=statuses("Pending", "Running", "Success"))
    task = hook.wait_for_task("task-1", poll_interval=10, timeout=100)
    assert task.status is TaskStatus.SUCCESS
    assert route.call_count == 3
    assert clock.sleeps == [10, 10]


def test_wait_returns_a_failure(hook: KlingHook, api: respx.MockRouter, clock: Clock) -> None:
    api.get("/v1/tasks/status").mock(
        side_effect=[
            *statuses("Running"),
            httpx.Response(200, json=status_body(status="Failure", error_message="content policy")),
        ]
    )
    task = hook.wait_for_task("task-1", poll_interval=5, timeout=100)
    assert (task.status, task.error_message) == (TaskStatus.FAILURE, "content policy")


def test_wait_times_out(hook: KlingHook, api: respx.MockRouter, clock: Clock) -> None:
    route = api.get("/v1/tasks/status").mock(
        return_value=httpx.Response(200, json=status_body(status="Running"))
    )
    with pytest.raises(KlingTaskTimeoutError, match="within 25 s") as info:
        hook.wait_for_task("task-1", poll_interval=10, timeout=25)
    assert info.value.last_status == "Running"
    assert clock.sleeps == [10, 10, 5]
    assert route.call_count == 3  # no query at the deadline: it would have no time left to answer
    assert clock.now == 1025.0  # the timeout is raised at the deadline, not later


def test_wait_keeps_polling_an_unknown_status(hook: KlingHook, api: respx.MockRouter, clock: Clock) -> None:
    api.get("/v1/tasks/status").mock(side_effect=statuses("Queued", "Expired", "Success"))
    assert hook.wait_for_task("task-1", poll_interval=1, timeout=60).status is TaskStatus.SUCCESS


def test_wait_rides_out_exhausted_status_retries(
    hook: KlingHook, api: respx.MockRouter, clock: Clock, logs: LogCapture
) -> None:
    failures = [json_error(503)] * 6  # one query: its first try and all 5 retries
    route = api.get("/v1/tasks/status").mock(side_effect=[*failures, *statuses("Success")])
    assert hook.wait_for_task("task-1", poll_interval=30, timeout=3600).status is TaskStatus.SUCCESS
    assert route.call_count == 7
    assert clock.sleeps == [0.25, 0.5, 1.0, 2.0, 4.0, 30]
    assert "polling on" in logs.text()


@pytest.mark.parametrize(
    ("response", "error"),
    [
        pytest.param(json_error(401), KlingAuthError, id="401"),
        pytest.param(json_error(404), KlingNotFoundError, id="404"),
        pytest.param(json_error(400), KlingBadRequestError, id="400"),
    ],
)
def test_wait_raises_at_once_when_polling_cannot_help(
    hook: KlingHook, api: respx.MockRouter, clock: Clock, response: httpx.Response, error: type[Exception]
) -> None:
    route = api.get("/v1/tasks/status").mock(return_value=response)
    with pytest.raises(error):
        hook.wait_for_task("task-1", poll_interval=1, timeout=60)
    assert route.call_count == 1


def test_wait_retries_stop_at_the_deadline(hook: KlingHook, api: respx.MockRouter, clock: Clock) -> None:
    api.get("/v1/tasks/status").mock(return_value=json_error(429, **{"Retry-After": "50"}))
    with pytest.raises(KlingTaskTimeoutError):
        hook.wait_for_task("task-1", poll_interval=10, timeout=30)
    assert sum(clock.sleeps) <= 30


def test_wait_logs_a_status_when_it_changes(hook: KlingHook, api: respx.MockRouter, clock: Clock) -> None:
    api.get("/v1/tasks/status").mock(
        side_effect=statuses("Pending", "Pending", "Running", "Running", "Running", "Success")
    )
    hook._log = log = mock.Mock()
    assert hook.wait_for_task("task-1", poll_interval=1, timeout=60).status is TaskStatus.SUCCESS

    def lines(method: mock.Mock) -> list[str]:
        return [call.args[0] % call.args[1:] for call in method.call_args_list]

    assert lines(log.info) == [
        "Kling task task-1 is Pending",
        "Kling task task-1 is Running",
        "Kling task task-1 finished: Success",
    ]
    assert [line for line in lines(log.debug) if line.startswith("Kling task task-1: status")] == [
        f"Kling task task-1: status {name}"
        for name in ("Pending", "Pending", "Running", "Running", "Running", "Success")
    ]


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        pytest.param(KlingRateLimitError("slow down", status_code=429), True, id="429"),
        pytest.param(KlingServerError("down", status_code=503), True, id="503"),
        pytest.param(KlingAPIError("conflict", status_code=409), True, id="409"),
        pytest.param(KlingTransportError("reset", sent=True), True, id="transport-sent"),
        pytest.param(KlingTransportError("refused", sent=False), True, id="transport-not-sent"),
        pytest.param(KlingAuthError("no", status_code=401), False, id="401"),
        pytest.param(KlingNotFoundError("gone", status_code=404), False, id="404"),
        pytest.param(KlingBadRequestError("bad", status_code=400), False, id="400"),
        pytest.param(KlingConnectionConfigError("no host"), False, id="config"),
        pytest.param(ValueError("not a Kling error"), False, id="other"),
    ],
)
def test_is_retryable_error(error: BaseException, retryable: bool) -> None:
    assert KlingHook.is_retryable_error(error) is retryable


@pytest.mark.parametrize(("poll_interval", "timeout"), [(0, 10), (-1, 10), (1, -1)])
def test_wait_checks_its_arguments(hook: KlingHook, poll_interval: float, timeout: float) -> None:
    with pytest.raises(ValueError, match="must"):
        hook.wait_for_task("task-1", poll_interval=poll_interval, timeout=timeout)


# -- test_connection ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [404, 400])
def test_test_connection_good_key(hook: KlingHook, api: respx.MockRouter, status: int) -> None:
    route = api.get("/v1/tasks/status").mock(return_value=json_error(status))
    ok, message = hook.test_connection()
    assert ok is True
    assert "accepted" in message
    assert route.call_count == 1
    assert route.calls.last.request.headers["Authorization"] == API_KEY


@pytest.mark.parametrize("status", [401, 403])
def test_test_connection_bad_key(hook: KlingHook, api: respx.MockRouter, status: int) -> None:
    api.get("/v1/tasks/status").mock(return_value=json_error(status, message=f"bad key {API_KEY}"))
    ok, message = hook.test_connection()
    assert ok is False
    assert "API key was rejected" in message or "rejected the API key" in message
    assert f"HTTP {status}" in message
    assert API_KEY not in message


def test_test_connection_unreachable(hook: KlingHook, api: respx.MockRouter) -> None:
    route = api.get("/v1/tasks/status").mock(side_effect=httpx.ConnectError("refused"))
    ok, message = hook.test_connection()
    assert ok is False
    assert "ConnectError" in message
    assert route.call_count == 1


def test_test_connection_without_key(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, password="")
    ok, message = KlingHook(CONN_ID).test_connection()
    assert ok is False
    assert "has no API key" in message


# -- async twins ----------------------------------------------------------------------------------------


async def test_aget_task_wire(hook: KlingHook, api: respx.MockRouter) -> None:
    route = api.get("/v1/tasks/status").mock(
        return_value=httpx.Response(200, json=status_body(status="Pending"))
    )
    task = await hook.aget_task("task-1")
    assert task.status is TaskStatus.PENDING
    request = route.calls.last.request
    assert dict(request.url.params) == {"task_id": "task-1"}
    assert_authenticated(request)


async def test_async_settings_never_call_the_blocking_api(
    hook: KlingHook, api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    def blocking(conn_id: str) -> Any:
        raise AssertionError("the sync get_connection was called from async code")

    monkeypatch.setattr(KlingHook, "get_connection", staticmethod(blocking))
    api.get("/v1/tasks/status").mock(return_value=httpx.Response(200, json=status_body()))
    await hook.aget_task("task-1")
    assert hook.settings.api_key == API_KEY  # cached by the async path


async def test_hooks_asking_at_once_share_one_connection_fetch(
    connection: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.providers.common.compat import connection as compat

    fetches: list[str] = []
    original = compat.get_async_connection

    async def counted(conn_id: str, **kwargs: Any) -> Any:
        fetches.append(conn_id)
        await asyncio.sleep(0.01)
        return await original(conn_id, **kwargs)

    monkeypatch.setattr(compat, "get_async_connection", counted)
    together = await asyncio.gather(*(KlingHook(CONN_ID).aget_settings() for _ in range(50)))
    assert fetches == [CONN_ID]
    assert {settings.api_key for settings in together} == {API_KEY}
    # Nothing is kept: a hook that asks later fetches the connection again (a changed key is seen).
    set_connection(monkeypatch, password="sk-ROTATED-0000")
    assert (await KlingHook(CONN_ID).aget_settings()).api_key == "sk-ROTATED-0000"
    assert fetches == [CONN_ID, CONN_ID]
    # A hook with its own overrides gets its own settings, not another's.
    assert (await KlingHook(CONN_ID, timeout=7).aget_settings()).timeout == 7


async def test_a_cancelled_hook_does_not_cancel_the_shared_fetch(connection: None) -> None:
    first = asyncio.ensure_future(KlingHook(CONN_ID).aget_settings())
    second = asyncio.ensure_future(KlingHook(CONN_ID).aget_settings())
    await asyncio.sleep(0)
    first.cancel()
    assert (await second).api_key == API_KEY


async def test_async_429_retry_after(hook: KlingHook, api: respx.MockRouter, sleeps: Sleeps) -> None:
    route = api.get("/v1/tasks/status").mock(
        side_effect=[json_error(429, **{"Retry-After": "4"}), httpx.Response(200, json=status_body())]
    )
    await hook.aget_task("task-1")
    assert route.call_count == 2
    assert sleeps.calls == [4.0]


async def test_async_503_exhausts_per_call_budget(
    hook: KlingHook, api: respx.MockRouter, sleeps: Sleeps
) -> None:
    route = api.get("/v1/tasks/status").mock(return_value=HTML_502)
    with pytest.raises(KlingServerError):
        await hook.aget_task("task-1", max_retries=2)
    assert route.call_count == 3
    assert sleeps.calls == [0.25, 0.5]


async def test_async_401_once(hook: KlingHook, api: respx.MockRouter) -> None:
    route = api.get("/v1/tasks/status").mock(return_value=json_error(401))
    with pytest.raises(KlingAuthError):
        await hook.aget_task("task-1")
    assert route.call_count == 1


async def test_one_async_client_shared_by_every_hook(
    connection: None, api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    used: list[httpx.AsyncClient] = []
    original = httpx.AsyncClient.send

    async def recording(self: httpx.AsyncClient, *args: Any, **kwargs: Any) -> httpx.Response:
        used.append(self)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "send", recording)
    api.get("/v1/tasks/status").mock(return_value=httpx.Response(200, json=status_body()))
    hooks = [KlingHook(CONN_ID) for _ in range(50)]
    await asyncio.gather(*(h.aget_task("task-1") for h in hooks))
    await asyncio.gather(*(h.aget_task("task-1") for h in hooks))
    assert len(used) == 100
    sender = (await _clients.shared_async_pool())[0]
    assert isinstance(sender, HttpxSender)
    assert {id(client) for client in used} == {id(sender.client)}
    assert len(_clients._clients) >= 1
    assert not used[0].is_closed


async def test_async_requests_in_flight_bounded_per_loop(
    connection: None, api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_flight = peak = 0
    original = httpx.AsyncClient.send

    async def slow(self: httpx.AsyncClient, *args: Any, **kwargs: Any) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.01)
            return await original(self, *args, **kwargs)
        finally:
            in_flight -= 1

    monkeypatch.setattr(httpx.AsyncClient, "send", slow)
    api.get("/v1/tasks/status").mock(return_value=httpx.Response(200, json=status_body()))
    hooks = [KlingHook(CONN_ID) for _ in range(120)]
    await asyncio.gather(*(h.aget_task("task-1") for h in hooks))
    assert peak == DEFAULT_MAX_IN_FLIGHT
    sender, slots = await _clients.shared_async_pool(CONN_ID, DEFAULT_MAX_IN_FLIGHT)
    assert sender is (await _clients.shared_async_pool())[0]
    assert not slots.locked()  # every slot given back


async def test_the_bound_in_flight_is_the_connections_extra(
    monkeypatch: pytest.MonkeyPatch, api: respx.MockRouter
) -> None:
    set_connection(monkeypatch, extra={"max_in_flight": "3"})
    in_flight = peak = 0
    original = httpx.AsyncClient.send

    async def slow(self: httpx.AsyncClient, *args: Any, **kwargs: Any) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.01)
            return await original(self, *args, **kwargs)
        finally:
            in_flight -= 1

    monkeypatch.setattr(httpx.AsyncClient, "send", slow)
    api.get("/v1/tasks/status").mock(return_value=httpx.Response(200, json=status_body()))
    await asyncio.gather(*(KlingHook(CONN_ID).aget_task("task-1") for _ in range(20)))
    assert peak == 3


async def test_the_aiohttp_session_carries_no_key_keeps_no_cookie_and_queues_nowhere(
    connection: None,
) -> None:
    sender = (await _clients.shared_async_pool())[0]
    assert isinstance(sender, _clients.AiohttpSender)
    session = sender.session
    assert "Authorization" not in session.headers
    assert session.headers["User-Agent"].startswith("airflow-provider-kling/")
    assert isinstance(session.cookie_jar, aiohttp.DummyCookieJar)
    assert not session.trust_env  # .netrc is never read (it would add a key of its own)
    # No limit in the connector: the per-connection semaphores are the bound, nothing queues inside it.
    assert session.connector is not None
    assert session.connector.limit == 0


def test_each_loop_gets_its_own_request_slots(connection: None) -> None:
    async def slots() -> asyncio.Semaphore:
        return (await _clients.shared_async_pool(CONN_ID))[1]

    assert asyncio.run(slots()) is not asyncio.run(slots())


async def test_shared_async_client_carries_no_key(connection: None, api: respx.MockRouter) -> None:
    api.get("/v1/tasks/status").mock(return_value=httpx.Response(200, json=status_body()))
    await KlingHook(CONN_ID).aget_task("task-1")
    assert api.calls.last.request.headers["Authorization"] == API_KEY  # passed per request
    sender = (await _clients.shared_async_pool())[0]
    assert isinstance(sender, HttpxSender)
    assert "Authorization" not in sender.client.headers


def test_each_loop_gets_its_own_client_closed_with_the_loop(connection: None, api: respx.MockRouter) -> None:
    api.get("/v1/tasks/status").mock(return_value=httpx.Response(200, json=status_body()))

    async def poll() -> _clients.AsyncSender:
        await KlingHook(CONN_ID).aget_task("task-1")
        client = (await _clients.shared_async_pool())[0]
        assert not client.is_closed
        return client

    first = asyncio.run(poll())
    second = asyncio.run(poll())
    assert first is not second
    assert first.is_closed
    assert second.is_closed


def test_loop_closed_without_shutdown_asyncgens_is_swept() -> None:
    loop = asyncio.new_event_loop()
    try:
        client, _ = loop.run_until_complete(_clients.shared_async_pool())
    finally:
        loop.close()  # no shutdown_asyncgens(): the client could not be awaited closed
    assert loop in _clients._clients

    async def other() -> _clients.AsyncSender:
        return (await _clients.shared_async_pool())[0]

    other_client = asyncio.run(other())
    assert other_client is not client
    assert loop not in _clients._clients
