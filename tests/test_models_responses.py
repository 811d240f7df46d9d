"""
The response models: only ``task_id``, ``task_status`` and ``urls`` can make an answer unusable.

Issue 9, defect 4 (an informational field must never make a paid task unreadable) and defect 6 (hostile
task ids), plus property-based tests of both parsers on random JSON.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from airflow_provider_kling.models import (
    KLING_TASK_ID_PATTERN,
    MAX_ERROR_MESSAGE_LENGTH,
    MAX_KLING_TASK_ID_LENGTH,
    MAX_REQUEST_ID_LENGTH,
    MAX_RESULT_URL_LENGTH,
    RULE_ERROR_TYPE,
    KlingSubmitResult,
    KlingTask,
    TaskStatus,
    check_kling_task_id,
)

SUCCESS: dict[str, Any] = {
    "output": {
        "task_id": "task_id",
        "task_status": "Success",
        "urls": ["https://xxxxx/xxxx.mp4"],
        "submit_time": 1756959000,
        "finish_time": 1756959050,
    },
    "usage": {"duration": 5},
    "request_id": "",
}
FAILURE: dict[str, Any] = {
    "output": {
        "task_id": "task_id",
        "task_status": "Failure",
        "submit_time": 1756959000,
        "finish_time": 1756959019,
        "error_message": "error_message",
    },
    "usage": {"duration": 5},
    "request_id": "",
}


def success(**output: Any) -> dict[str, Any]:
    """The spec's Success example with some ``output`` fields replaced."""
    body = copy.deepcopy(SUCCESS)
    body["output"].update(output)
    return body


def failure(**output: Any) -> dict[str, Any]:
    """The spec's Failure example with some ``output`` fields replaced."""
    body = copy.deepcopy(FAILURE)
    body["output"].update(output)
    return body


def with_body(body: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """``body`` with some top-level fields replaced."""
    return {**copy.deepcopy(body), **fields}


def assert_xcom_ready(task: KlingTask) -> None:
    """``as_result()`` is strict JSON (no NaN, no infinity) and survives the round trip unchanged."""
    result = task.as_result()
    assert json.loads(json.dumps(result, allow_nan=False)) == result


# -- defect 4: informational fields never make a task unreadable -----------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "expected"),
    [
        pytest.param(with_body(SUCCESS, request_id=12345), "request_id", "12345", id="numeric-request-id"),
        pytest.param(with_body(SUCCESS, request_id=1.5), "request_id", "1.5", id="fractional-request-id"),
        pytest.param(with_body(SUCCESS, request_id=True), "request_id", None, id="boolean-request-id"),
        pytest.param(with_body(SUCCESS, request_id={"id": 1}), "request_id", None, id="object-request-id"),
        pytest.param(with_body(SUCCESS, request_id=[1]), "request_id", None, id="list-request-id"),
        pytest.param(with_body(SUCCESS, request_id=math.nan), "request_id", None, id="nan-request-id"),
        pytest.param(
            with_body(SUCCESS, request_id="r" * 10_000),
            "request_id",
            "r" * (MAX_REQUEST_ID_LENGTH - 3) + "...",
            id="long-request-id-cut",
        ),
        pytest.param(success(submit_time=1756959000.5), "submit_time", 1756959000.5, id="fractional-submit"),
        pytest.param(
            success(finish_time=1756959050.25), "finish_time", 1756959050.25, id="fractional-finish"
        ),
        pytest.param(success(finish_time=1756959050.0), "finish_time", 1756959050, id="integral-float-time"),
        pytest.param(
            success(submit_time="1756959000.5"), "submit_time", 1756959000.5, id="numeric-text-time"
        ),
        pytest.param(success(submit_time=" 1756959000 "), "submit_time", 1756959000, id="padded-text-time"),
        pytest.param(success(submit_time="1.7e9"), "submit_time", 1_700_000_000, id="exponent-text-time"),
        pytest.param(success(submit_time="soon"), "submit_time", None, id="text-time"),
        pytest.param(success(submit_time="1_000"), "submit_time", None, id="underscore-text-time"),
        pytest.param(success(submit_time="nan"), "submit_time", None, id="nan-text-time"),
        pytest.param(success(submit_time=math.nan), "submit_time", None, id="nan-time"),
        pytest.param(success(finish_time=math.inf), "finish_time", None, id="infinite-time"),
        pytest.param(success(finish_time=-math.inf), "finish_time", None, id="minus-infinite-time"),
        pytest.param(success(submit_time=1e300), "submit_time", None, id="absurd-float-time"),
        pytest.param(success(submit_time=10**400), "submit_time", None, id="absurd-int-time"),
        pytest.param(success(submit_time=1756959000000), "submit_time", None, id="milliseconds-time"),
        pytest.param(success(submit_time=-5), "submit_time", None, id="negative-time"),
        pytest.param(success(submit_time=0), "submit_time", None, id="zero-time"),
        pytest.param(success(submit_time=True), "submit_time", None, id="boolean-time"),
        pytest.param(success(submit_time=[1756959000]), "submit_time", None, id="list-time"),
        pytest.param(success(submit_time={"s": 1}), "submit_time", None, id="object-time"),
        pytest.param(
            with_body(SUCCESS, usage={"duration": 5.5}), "usage_seconds", 5.5, id="fractional-usage"
        ),
        pytest.param(
            with_body(SUCCESS, usage={"duration": 5.0}), "usage_seconds", 5, id="integral-float-usage"
        ),
        pytest.param(with_body(SUCCESS, usage={"duration": "5"}), "usage_seconds", 5, id="text-usage"),
        pytest.param(with_body(SUCCESS, usage={"duration": 0}), "usage_seconds", 0, id="zero-usage"),
        pytest.param(with_body(SUCCESS, usage={"duration": -1}), "usage_seconds", None, id="negative-usage"),
        pytest.param(with_body(SUCCESS, usage={"duration": math.nan}), "usage_seconds", None, id="nan-usage"),
        pytest.param(with_body(SUCCESS, usage={"duration": math.inf}), "usage_seconds", None, id="inf-usage"),
        pytest.param(
            with_body(SUCCESS, usage={"duration": False}), "usage_seconds", None, id="boolean-usage"
        ),
        pytest.param(
            with_body(SUCCESS, usage={"duration": 10**400}), "usage_seconds", None, id="absurd-usage"
        ),
        pytest.param(with_body(SUCCESS, usage={"duration": {}}), "usage_seconds", None, id="object-usage"),
        pytest.param(with_body(SUCCESS, usage=[5]), "usage_seconds", None, id="usage-not-an-object"),
        pytest.param(failure(error_message=42), "error_message", "42", id="numeric-error-message"),
        pytest.param(failure(error_message=1.5), "error_message", "1.5", id="fractional-error-message"),
        pytest.param(failure(error_message=False), "error_message", "false", id="boolean-error-message"),
        pytest.param(failure(error_message=math.nan), "error_message", "NaN", id="nan-error-message"),
        pytest.param(
            failure(error_message={"code": "E1", "message": "moderation"}),
            "error_message",
            '{"code":"E1","message":"moderation"}',
            id="object-error-message",
        ),
        pytest.param(
            failure(error_message=["no", "audio"]), "error_message", '["no","audio"]', id="list-error-message"
        ),
        pytest.param(failure(error_message="é"), "error_message", "é", id="non-ascii-error-message-kept"),
        pytest.param(
            failure(error_message="line 1\nline 2\x00\ud800 \U0001f600"),
            "error_message",
            "line 1\nline 2\ufffd\ufffd \U0001f600",
            id="unstorable-characters-in-error-message",
        ),
        pytest.param(
            with_body(SUCCESS, request_id="r\x00\udfff"),
            "request_id",
            "r\ufffd\ufffd",
            id="unstorable-request-id",
        ),
        pytest.param(failure(error_message=""), "error_message", None, id="empty-error-message"),
        pytest.param(failure(error_message=None), "error_message", None, id="null-error-message"),
        pytest.param(
            failure(error_message="x" * 100_000),
            "error_message",
            "x" * (MAX_ERROR_MESSAGE_LENGTH - 3) + "...",
            id="long-error-message-cut",
        ),
        pytest.param(
            failure(error_message={"m": "x" * 100_000}),
            "error_message",
            ('{"m":"' + "x" * 100_000)[: MAX_ERROR_MESSAGE_LENGTH - 3] + "...",
            id="long-object-error-message-cut",
        ),
    ],
)
def test_informational_field_is_coerced_or_dropped(body: dict[str, Any], field: str, expected: Any) -> None:
    task = KlingTask.from_api(body)
    value = getattr(task, field)
    assert value == expected
    assert type(value) is type(expected)
    assert task.status.is_terminal
    assert_xcom_ready(task)


def test_deeply_nested_error_message_is_read() -> None:
    nested: Any = "moderation"
    for _ in range(5000):
        nested = [nested]
    task = KlingTask.from_api(failure(error_message=nested))
    assert task.status is TaskStatus.FAILURE
    assert task.error_message
    assert len(task.error_message) <= MAX_ERROR_MESSAGE_LENGTH


def test_fractional_times_and_usage_reach_the_result() -> None:
    body = with_body(
        success(submit_time=1756959000.5, finish_time=1756959050.75), usage={"duration": 5.04}, request_id=7
    )
    task = KlingTask.from_api(body)
    assert task.as_result() == {
        "kling_task_id": "task_id",
        "status": "Success",
        "urls": ["https://xxxxx/xxxx.mp4"],
        "usage_seconds": 5.04,
        "submit_time": 1756959000.5,
        "finish_time": 1756959050.75,
    }
    assert task.request_id == "7"


@pytest.mark.parametrize(
    ("body", "request_id"),
    [
        pytest.param({"output": {"task_id": "t-1"}, "request_id": 99}, "99", id="numeric"),
        pytest.param({"output": {"task_id": "t-1"}, "request_id": {"x": 1}}, None, id="object"),
        pytest.param({"output": {"task_id": "t-1"}, "request_id": False}, None, id="boolean"),
        pytest.param({"output": {"task_id": "t-1"}, "request_id": ""}, None, id="empty"),
        pytest.param({"output": {"task_id": "t-1"}}, None, id="missing"),
    ],
)
def test_submit_result_reads_any_request_id(body: dict[str, Any], request_id: str | None) -> None:
    result = KlingSubmitResult.from_api(body)
    assert (result.task_id, result.request_id) == ("t-1", request_id)


def test_numeric_task_id_is_read_as_its_text() -> None:
    assert KlingSubmitResult.from_api({"output": {"task_id": 784398787239723}}).task_id == "784398787239723"
    assert KlingTask.from_api(success(task_id=784398787239723)).task_id == "784398787239723"


# -- urls: load-bearing, so a list of http(s) URLs or a clear error ---------------------------------------


@pytest.mark.parametrize(
    ("urls", "expected"),
    [
        pytest.param(None, [], id="null"),
        pytest.param([], [], id="empty"),
        pytest.param(["http://127.0.0.1:8080/results/a/1.mp4"], None, id="http-with-port"),
        pytest.param(["HTTPS://CDN.example/A.MP4?sig=a%20b&x=1#f"], None, id="upper-case-scheme"),
        pytest.param(["https://cdn.example/a b.mp4"], None, id="space-in-path"),
        pytest.param(["https://cdn.example/視頻.mp4"], None, id="non-ascii-path"),
        pytest.param(["https://a/1.mp4", "https://a/2.mp4"], None, id="two"),
    ],
)
def test_result_urls_are_kept_exactly(urls: list[str] | None, expected: list[str] | None) -> None:
    task = KlingTask.from_api(success(urls=urls))
    assert task.urls == (urls if expected is None else expected)


def test_missing_urls_are_an_empty_list() -> None:
    body = success()
    del body["output"]["urls"]
    assert KlingTask.from_api(body).urls == []


@pytest.mark.parametrize(
    ("urls", "match"),
    [
        pytest.param("https://cdn.example/a.mp4", "expected a list of URLs, got a string", id="a-string"),
        pytest.param("", "expected a list of URLs, got a string", id="empty-string"),
        pytest.param({}, "expected a list of URLs, got an object", id="an-object"),
        pytest.param(0, "expected a list of URLs, got an integer", id="zero"),
        pytest.param(False, "expected a list of URLs, got a boolean", id="false"),
        pytest.param([None], r"output\.urls\[0\]: expected a string, got null", id="null-item"),
        pytest.param(["https://a/1.mp4", 5], r"output\.urls\[1\]: expected a string", id="number-item"),
        pytest.param([["https://a/1.mp4"]], r"output\.urls\[0\]: expected a string, got a list", id="nested"),
        pytest.param([""], r"output\.urls\[0\]: '' is not an http\(s\) URL", id="empty-item"),
        pytest.param(["ftp://a/1.mp4"], "is not an http", id="ftp"),
        pytest.param(["file:///etc/passwd"], "is not an http", id="file"),
        pytest.param(["javascript:alert(1)"], "is not an http", id="javascript"),
        pytest.param(["/results/1.mp4"], "is not an http", id="relative"),
        pytest.param(["https://"], "is not an http", id="no-host"),
        pytest.param(["https:///path.mp4"], "is not an http", id="empty-host"),
        pytest.param(["https://[::1/a.mp4"], "is not an http", id="broken-ipv6-host"),
        pytest.param(["https://a/1.mp4\nX-Injected: 1"], "control character", id="newline"),
        pytest.param(["https://a/\x001.mp4"], "control character", id="nul"),
        pytest.param([" https://a/1.mp4"], "whitespace", id="leading-space"),
        pytest.param(["https://a/1.mp4 "], "whitespace", id="trailing-space"),
        pytest.param(["https://a/\ud8001.mp4"], "not valid Unicode", id="lone-surrogate"),
        pytest.param(["https://a/" + "x" * MAX_RESULT_URL_LENGTH], "characters, at most", id="too-long"),
    ],
)
def test_unusable_urls_are_a_validation_error(urls: Any, match: str) -> None:
    with pytest.raises(ValidationError, match=match) as raised:
        KlingTask.from_api(success(urls=urls))
    assert raised.value.errors()[0]["type"] == RULE_ERROR_TYPE


@pytest.mark.parametrize(
    ("status", "match"),
    [
        pytest.param(None, "got null", id="null"),
        pytest.param("", "got an empty string", id="empty"),
        pytest.param(1, "got an integer", id="number"),
        pytest.param(["Success"], "got a list", id="list"),
    ],
)
def test_unusable_status_is_a_rule_error(status: Any, match: str) -> None:
    with pytest.raises(
        ValidationError, match=rf"spec output\.task_status: expected a status, {match}"
    ) as raised:
        KlingTask.from_api(success(task_status=status))
    assert raised.value.errors()[0]["type"] == RULE_ERROR_TYPE


def test_missing_status_is_a_rule_error() -> None:
    body = success()
    del body["output"]["task_status"]
    with pytest.raises(ValidationError, match=r"spec output\.task_status: expected a status, got null"):
        KlingTask.from_api(body)


def test_tasks_built_directly_keep_their_status() -> None:
    task = KlingTask(task_id="t", status=TaskStatus("Expired"), urls=["https://a/1.mp4"], usage_seconds=5)
    assert (task.status.value, task.status.is_terminal, task.usage_seconds) == ("Expired", False, 5)
    assert KlingTask(task_id="t", status="Running").status is TaskStatus.RUNNING


# -- defect 6: hostile task ids --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task_id",
    [
        "task_id",
        "t",
        "t-1",
        "kt-42",
        "task-10",
        "0",
        "_",
        "784398787239723",
        uuid.uuid4().hex,
        str(uuid.uuid4()),
        "a" * MAX_KLING_TASK_ID_LENGTH,
        "Z9_-",
    ],
)
def test_real_task_ids_pass(task_id: str) -> None:
    assert check_kling_task_id(task_id) == task_id
    assert KLING_TASK_ID_PATTERN.fullmatch(task_id)
    assert KlingTask.from_api(success(task_id=task_id)).task_id == task_id
    assert KlingSubmitResult.from_api({"output": {"task_id": task_id}}).task_id == task_id


HOSTILE_IDS = [
    pytest.param("../../../escape", id="dot-dot"),
    pytest.param("a/b", id="slash"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("..", id="only-dots"),
    pytest.param("a.b", id="dot"),
    pytest.param("task\n1", id="newline"),
    pytest.param("task\r\nX-Injected: 1", id="crlf"),
    pytest.param("task\x00", id="nul"),
    pytest.param("task 1", id="space"),
    pytest.param(" task", id="leading-space"),
    pytest.param("task\n", id="trailing-newline"),
    pytest.param("täsk", id="non-ascii"),
    pytest.param("task\u202e", id="bidi-override"),
    pytest.param("\uff54\uff41\uff53\uff4b", id="full-width"),
    pytest.param("-rf", id="leading-dash"),
    pytest.param("", id="empty"),
    pytest.param("a" * (MAX_KLING_TASK_ID_LENGTH + 1), id="too-long"),
    pytest.param("t?x=1", id="query"),
    pytest.param("t%2e%2e", id="percent"),
    pytest.param("{{ ti }}", id="template"),
]


@pytest.mark.parametrize("task_id", HOSTILE_IDS)
def test_hostile_task_ids_are_refused(task_id: str) -> None:
    with pytest.raises(ValueError, match=r"^kling_task_id: .* is not a valid Kling task id") as raised:
        check_kling_task_id(task_id)
    message = str(raised.value)
    assert "\n" not in message
    assert "\r" not in message
    assert "\x00" not in message
    assert "letters, digits, '_' and '-'" in message
    assert len(message) < 300


@pytest.mark.parametrize("task_id", HOSTILE_IDS)
def test_hostile_task_id_in_an_answer_is_a_validation_error(task_id: str) -> None:
    with pytest.raises(ValidationError, match=r"spec output\.task_id: .* is not a valid Kling task id"):
        KlingTask.from_api(success(task_id=task_id))
    with pytest.raises(ValidationError, match=r"spec output\.task_id: .* is not a valid Kling task id"):
        KlingSubmitResult.from_api({"output": {"task_id": task_id}, "request_id": "r"})


def test_hostile_task_id_is_refused_when_a_task_is_built_directly() -> None:
    with pytest.raises(ValidationError, match="is not a valid Kling task id"):
        KlingTask(task_id="../x", status=TaskStatus.SUCCESS)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param(None, "null", id="none"),
        pytest.param(12, "an integer", id="int"),
        pytest.param(True, "a boolean", id="bool"),
        pytest.param(["t"], "a list", id="list"),
    ],
)
def test_check_kling_task_id_refuses_non_strings(value: object, shown: str) -> None:
    with pytest.raises(ValueError, match=f"^task: expected a string, got {shown}"):
        check_kling_task_id(value, field="task")


def test_check_kling_task_id_names_the_field_and_cuts_the_value() -> None:
    with pytest.raises(ValueError, match=r"^kling_task_id of task_sensor: '\.\./") as raised:
        check_kling_task_id("../" * 10_000, field="kling_task_id of task_sensor")
    assert len(str(raised.value)) < 300


def test_unknown_status_is_logged_shortened(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="airflow_provider_kling.models"):
        task = KlingTask.from_api(success(task_status="Expired" * 10_000))
    assert not task.status.is_terminal
    assert task.status.value == "Expired" * 10_000
    assert "Unknown Kling task status 'ExpiredExpired" in caplog.text
    assert len(caplog.text) < 1000


# -- hypothesis: nothing but ValidationError escapes, and an intact Success/Failure is always read ---------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["", "0", "1756959000", "1.5", "nan", "inf", "-1", "1e400", "Success", "https://a/b"])
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
TASK_IDS = st.from_regex(KLING_TASK_ID_PATTERN, fullmatch=True)
HOSTS = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z]{2,6})?(:[0-9]{1,5})?", fullmatch=True)
PATHS = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=40
)  # anything but surrogates and control characters
URLS = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}/{path}".rstrip(),
    st.sampled_from(["https", "http", "HTTPS", "Http"]),
    HOSTS,
    PATHS,
)
STATUS_FIELDS = ("task_id", "task_status", "urls", "submit_time", "finish_time", "error_message")


def _valid_status_body(
    draw: st.DrawFn, task_id: str, status: str, urls: list[str] | None, drop_urls: bool
) -> dict[str, Any]:
    output: dict[str, Any] = {"task_id": task_id, "task_status": status}
    if not drop_urls:
        output["urls"] = urls
    for name in ("submit_time", "finish_time", "error_message"):
        if draw(st.booleans()):
            output[name] = draw(JSON)
    output.update(draw(st.dictionaries(st.text(max_size=8).filter(lambda k: k not in STATUS_FIELDS), JSON)))
    body: dict[str, Any] = {"output": output}
    if draw(st.booleans()):
        body["usage"] = draw(st.fixed_dictionaries({}, optional={"duration": JSON, "tokens": JSON}) | JSON)
    if draw(st.booleans()):
        body["request_id"] = draw(JSON)
    body.update(draw(st.dictionaries(st.sampled_from(["code", "message", "error", "extra"]), JSON)))
    return body


@st.composite
def intact_status_bodies(draw: st.DrawFn) -> tuple[dict[str, Any], str, str, list[str]]:
    """A Success/Failure body whose load-bearing fields are valid, with anything in every other field."""
    task_id = draw(TASK_IDS)
    status = draw(st.sampled_from(["Success", "Failure"]))
    urls = draw(st.lists(URLS, max_size=3))
    drop_urls = not urls and draw(st.booleans())
    body = _valid_status_body(draw, task_id, status, urls or draw(st.sampled_from([[], None])), drop_urls)
    return body, task_id, status, urls


@st.composite
def status_bodies_with_random_fields(draw: st.DrawFn) -> Any:
    """An otherwise valid status body with random JSON in one or more of its fields, or random JSON."""
    body = _valid_status_body(draw, draw(TASK_IDS), "Success", draw(st.lists(URLS, max_size=2)), False)
    for name in draw(st.lists(st.sampled_from(STATUS_FIELDS), unique=True)):
        body["output"][name] = draw(JSON)
    if draw(st.booleans()):
        body["output"] = draw(JSON)
    return draw(st.sampled_from([body, draw(JSON)]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(status_bodies_with_random_fields())
@example({"output": {"task_id": "t", "task_status": "Success", "urls": [{"[": 1}]}})
@example({"output": {"task_id": 10**300, "task_status": "Success"}})
@example({"output": {"task_id": "t", "task_status": "\ud800"}})
def test_property_status_parser_returns_a_task_or_raises_validation_error(payload: Any) -> None:
    try:
        task = KlingTask.from_api(payload)
    except ValidationError:
        return
    assert isinstance(task, KlingTask)
    assert KLING_TASK_ID_PATTERN.fullmatch(task.task_id)
    assert_xcom_ready(task)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(intact_status_bodies())
def test_property_intact_success_or_failure_is_always_read(
    case: tuple[dict[str, Any], str, str, list[str]],
) -> None:
    body, task_id, status, urls = case
    task = KlingTask.from_api(body)
    assert task.task_id == task_id
    assert task.status is TaskStatus(status)
    assert task.status.is_terminal
    assert task.urls == urls
    for name in ("submit_time", "finish_time", "usage_seconds"):
        value = getattr(task, name)
        assert value is None or (type(value) in (int, float) and math.isfinite(value) and value >= 0)
        if isinstance(value, float):
            assert not value.is_integer()
    for text, limit in (
        (task.error_message, MAX_ERROR_MESSAGE_LENGTH),
        (task.request_id, MAX_REQUEST_ID_LENGTH),
    ):
        assert text is None or 0 < len(text) <= limit
        assert text is None or ("\x00" not in text and text.encode("utf-8"))
    assert_xcom_ready(task)
    result = task.as_result()
    assert (result["kling_task_id"], result["status"], result["urls"]) == (task_id, status, urls)


@st.composite
def submit_bodies(draw: st.DrawFn) -> Any:
    body: dict[str, Any] = {"output": {"task_id": draw(TASK_IDS)}}
    if draw(st.booleans()):
        body["request_id"] = draw(JSON)
    if draw(st.booleans()):
        body["output"]["task_id"] = draw(JSON)
    if draw(st.booleans()):
        body["output"] = draw(JSON)
    return draw(st.sampled_from([body, draw(JSON)]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(submit_bodies())
def test_property_submit_parser_returns_a_result_or_raises_validation_error(payload: Any) -> None:
    try:
        result = KlingSubmitResult.from_api(payload)
    except ValidationError:
        return
    assert KLING_TASK_ID_PATTERN.fullmatch(result.task_id)
    assert result.request_id is None or 0 < len(result.request_id) <= MAX_REQUEST_ID_LENGTH
    assert json.loads(json.dumps(result.model_dump(), allow_nan=False)) == result.model_dump()


@settings(max_examples=200, deadline=None)
@given(task_id=TASK_IDS, request_id=JSON, extra=st.dictionaries(st.text(max_size=8), JSON, max_size=3))
def test_property_submit_with_a_valid_task_id_is_always_read(
    task_id: str, request_id: Any, extra: Any
) -> None:
    result = KlingSubmitResult.from_api({"output": {**extra, "task_id": task_id}, "request_id": request_id})
    assert result.task_id == task_id


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=140) | JSON)
def test_property_task_id_check_agrees_with_the_pattern(value: Any) -> None:
    valid = isinstance(value, str) and KLING_TASK_ID_PATTERN.fullmatch(value) is not None
    if valid:
        assert check_kling_task_id(value) == value
    else:
        with pytest.raises(ValueError, match=r"^kling_task_id: ") as raised:
            check_kling_task_id(value)
        assert "\n" not in str(raised.value)
        assert len(str(raised.value)) < 300
